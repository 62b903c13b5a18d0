import { describe, expect, it } from 'vitest';
import { fieldForError } from '../../src/lib/fields.js';

const PUSH = ['client', 'listen_port', 'protocol', 'targets', 'name', 'health_check_interval_secs'];

function check(code, message, fields, expected) {
  expect(fieldForError({ code, message }, fields)).toBe(expected);
}

describe('fieldForError', () => {
  it('puts push errors on the field they are about', () => {
    check('invalid_target', 'bad target', PUSH, 'targets');
    check('port_in_use', 'port 8080 is in use', PUSH, 'listen_port');
    check('validation.inverted_range', 'start after end', PUSH, 'listen_port');
    check('port_outside_grant', 'no grant', PUSH, 'listen_port');
    check('client_not_connected', 'offline', PUSH, 'client');
    check('protocol_not_granted', 'udp', PUSH, 'protocol');
    check('validation.out_of_range', 'health_check_interval_secs must be 1 to 3600', PUSH, 'health_check_interval_secs');
  });

  it('takes the first candidate the form has', () => {
    check('validation.invalid_port', 'bad', ['user', 'client', 'ports', 'protocols'], 'ports');
    check('validation.invalid_name', 'bad', ['id', 'role', 'password'], 'id');
    check('validation.weak_password', 'short', ['current_password', 'new_password'], 'new_password');
  });

  it('matches a field named in the message, whole words only', () => {
    check('invalid_request', 'unknown field `name`, expected one of …', PUSH, 'name');
    check('invalid_request', 'listen_portx is odd', ['listen_port'], null);
  });

  it('leaves form-level errors to the form', () => {
    check('rate_limited', 'slow down', PUSH, null);
    check('unauthenticated', 'wrong user id or password', ['user_id', 'password'], null);
    check('port_in_use', 'taken', ['name'], null);
    expect(fieldForError(null, PUSH)).toBeNull();
  });
});
