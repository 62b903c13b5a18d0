// Entry point: applies the stored theme and renders the application.
import { render } from 'preact';
import { App } from './app.jsx';
import { initTheme } from './theme.js';
import './style.css';

initTheme();
render(<App />, document.getElementById('app'));
