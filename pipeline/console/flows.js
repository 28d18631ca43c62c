// Flow search: the filter language of GET /api/v1/flows over stored flow records; the URL
// (#/flows?filter=…&since=…) holds the search, so it can be shared and reloaded.

import { aborted, api } from './api.js';
import { banner, checkbox, field, formValues, h, input, placeholder, renderTable } from './ui.js';

// The columns shown unless "all columns" is ticked (flow-record JSON names).
export const FLOW_COLUMNS = [
  'window-start', 'interface-id', 'flow-direction', 'srcaddr', 'srcport', 'dstaddr', 'dstport', 'protocol',
  'packets', 'bytes', 'action', 'rule-layer', 'rule-id', 'log-status',
];
const EXAMPLES = [
  'action = REJECT',
  'srcaddr = 10.0.0.0/8 and dstport in (22, 3389) and action = REJECT',
  'addr = 203.0.113.0/24 and not protocol = udp',
  'interface-id = eni-* and flow-direction = ingress and bytes > 1000000',
];

/** `value` as a double-quoted filter value: backslash before \, " and the wildcard *. */
export const quote = (value) => `"${String(value).replace(/[\\"*]/g, (c) => `\\${c}`)}"`;

/** The shown columns of a search result: `wanted` in their order, if the API returned them. */
export function pick(data, wanted) {
  const index = wanted.map((c) => data.columns.indexOf(c)).filter((i) => i >= 0);
  if (!index.length) return { columns: data.columns, rows: data.rows };
  return { columns: index.map((i) => data.columns[i]), rows: data.rows.map((row) => index.map((i) => row[i])) };
}

function render(root, { params, signal }) {
  const get = (name, fallback) => params.get(name) ?? fallback;
  const filter = input('flow-filter', get('filter', ''), {
    class: 'mono', placeholder: EXAMPLES[1], spellcheck: 'false', autocomplete: 'off', 'aria-label': 'filter',
  });
  const form = h('form', { class: 'controls', testid: 'flow-search-form' },
    field('filter', filter, 'wide'),
    field('since', input('flow-since', get('since', '1h'), { size: 10 })),
    field('until', input('flow-until', get('until', ''), { size: 10, placeholder: 'now' })),
    field('at most', input('flow-limit', get('limit', '100'), { type: 'number', min: 1, max: 10000 })),
    h('button', { type: 'submit', id: 'flow-search', testid: 'flow-search' }, 'Search'),
    checkbox('flow-all-columns', 'all columns', get('all', '') === '1'),
  );
  const examples = h('p', { class: 'hint' }, 'Examples: ', EXAMPLES.map((text, i) => [
    i ? ' · ' : '',
    h('a', { href: '#', class: 'mono', testid: 'flow-example', onclick: (e) => {
      e.preventDefault();
      filter.value = text;
      search();
    } }, text),
  ]));
  const errors = banner('flow-search-error');
  const count = h('p', { class: 'meta', testid: 'flow-count', 'aria-live': 'polite' });
  const results = h('div', { testid: 'flow-results' });
  root.append(
    h('h1', {}, 'Flow search'),
    h('section', { class: 'card' }, form, examples, errors.el),
    h('section', { class: 'card' }, count, results),
  );

  let last = null;
  function show() {
    const all = form.elements['flow-all-columns'].checked;
    const { columns, rows } = all ? last : pick(last, FLOW_COLUMNS);
    renderTable(results, columns, rows, { empty: 'No flow matches.' });
  }

  async function search() {
    const values = formValues(form);
    const query = {
      filter: values['flow-filter'], since: values['flow-since'], until: values['flow-until'], limit: values['flow-limit'],
    };
    const shared = new URLSearchParams(Object.entries(query).filter(([, v]) => v));
    history.replaceState(null, '', `#/flows?${shared}`);
    errors.clear();
    count.textContent = '';
    placeholder(results, 'loading', 'Searching…');
    try {
      last = await api.get('/api/v1/flows', query, signal);
      const limit = Number(values['flow-limit']) || 100;
      count.textContent = `${last.rows.length} flow${last.rows.length === 1 ? '' : 's'}${last.rows.length >= limit ? ` (the newest ${limit}; narrow the filter or raise the limit)` : ''}`;
      show();
    } catch (error) {
      if (aborted(error)) return;
      errors.show(error);
      placeholder(results, 'error', 'No results: see the error above.');
    }
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    search();
  });
  form.elements['flow-all-columns'].addEventListener('change', () => last && show());
  search();
}

export default { id: 'flows', title: 'Flow search', render };
