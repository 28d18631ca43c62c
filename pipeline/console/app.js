// The console's shell: a hash router over the pages (#/traffic, #/flows?filter=…), the API token
// field and the light/dark theme. A page is {id, title, render(root, {params, signal})} and
// render may return a cleanup function, called when the page is left.

import { token } from './api.js';
import { h } from './ui.js';
import traffic from './traffic.js';
import talkers from './talkers.js';
import sankey from './sankey.js';
import rejects from './rejects.js';
import alarms from './alarms.js';
import flows from './flows.js';
import flowLogs from './flow_logs.js';

const PAGES = [traffic, talkers, sankey, rejects, alarms, flows, flowLogs];
const THEME_KEY = 'flowlogs.theme';

const view = document.getElementById('view');
let current = null; // {controller, cleanup}

function parseHash() {
  const [path, search = ''] = location.hash.replace(/^#\/?/, '').split('?');
  return { id: path || PAGES[0].id, params: new URLSearchParams(search) };
}

function route() {
  if (current) {
    current.controller.abort();
    if (typeof current.cleanup === 'function') current.cleanup();
  }
  const { id, params } = parseHash();
  const page = PAGES.find((p) => p.id === id);
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.getAttribute('href') === `#/${id}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const controller = new AbortController();
  view.replaceChildren();
  view.dataset.page = page ? page.id : 'not-found';
  if (!page) {
    view.append(h('h1', {}, 'No such page'), h('p', { class: 'placeholder', testid: 'empty' }, `Nothing at #/${id}. Pick a page above.`));
    current = { controller, cleanup: null };
    return;
  }
  document.title = `${page.title} · Flow Logs`;
  current = { controller, cleanup: page.render(view, { params, signal: controller.signal }) };
}

// --- theme -----------------------------------------------------------------------------------

const toggle = document.getElementById('theme-toggle');
const systemDark = window.matchMedia('(prefers-color-scheme: dark)');

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  const other = theme === 'dark' ? 'light' : 'dark';
  toggle.textContent = theme === 'dark' ? '☀ Light' : '☾ Dark';
  toggle.setAttribute('aria-label', `switch to the ${other} theme`);
  toggle.dataset.theme = theme;
  window.dispatchEvent(new Event('themechange'));
}

applyTheme(localStorage.getItem(THEME_KEY) || (systemDark.matches ? 'dark' : 'light'));
toggle.addEventListener('click', () => {
  const next = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
  localStorage.setItem(THEME_KEY, next);
  applyTheme(next);
});
systemDark.addEventListener('change', (e) => {
  if (!localStorage.getItem(THEME_KEY)) applyTheme(e.matches ? 'dark' : 'light');
});

// --- API token -------------------------------------------------------------------------------

const tokenInput = document.getElementById('api-token');
tokenInput.value = token.get();
tokenInput.addEventListener('input', () => token.set(tokenInput.value));

window.addEventListener('hashchange', route);
route();
