// Build of the embedded Web UI. The output directory is chosen by `cargo xtask web`
// (`--outDir`); every asset but index.html and public/ files gets a content hash in its name,
// which is what lets the server cache them forever.
import { defineConfig } from 'vite';

export default defineConfig({
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    sourcemap: false,
    // One script and one stylesheet: the UI is small, and a strict CSP likes few files.
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 400,
  },
  test: {
    environment: 'happy-dom',
    include: ['tests/unit/**/*.test.{js,jsx}'],
  },
});
