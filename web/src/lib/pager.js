// Cursor paging of the audit log. The API hands out only "next" cursors, so going back means
// remembering the cursors that led to each page: a stack, whose top is the current page's.

/** The first page. */
export const firstPage = () => ({ stack: [null], next: null });

/** The state after a page arrived with `nextCursor` (null on the last page). */
export const received = (state, nextCursor) => ({ ...state, next: nextCursor ?? null });

/** The cursor to ask for the current page with. */
export const currentCursor = (state) => state.stack[state.stack.length - 1];

/** The state for the next page, or the same state on the last page. */
export const forward = (state) => (state.next ? { stack: [...state.stack, state.next], next: null } : state);

/** The state for the previous page, or the same state on the first page. */
export const back = (state) => (state.stack.length > 1 ? { stack: state.stack.slice(0, -1), next: null } : state);

/** The 1-based number of the current page. */
export const pageNumber = (state) => state.stack.length;
