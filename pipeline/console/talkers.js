// Top talkers: the `top-talkers` report over any flow columns, ranked by bytes, packets or records.

import { aborted, report } from './api.js';
import { banner, field, formValues, h, input, placeholder, renderTable, select } from './ui.js';

const PRESETS = [ // [by, label, test id]
  ['srcaddr,dstaddr,protocol,dstport', 'conversations', 'conversations'],
  ['srcaddr', 'sources', 'sources'],
  ['dstaddr', 'destinations', 'destinations'],
  ['interface_id', 'ENIs', 'enis'],
  ['dstport,protocol', 'services', 'services'],
  ['vpc_id,subnet_id', 'subnets', 'subnets'],
  ['interface_id,flow_direction,action', 'ENIs by direction and action', 'eni-verdicts'],
];
const LABELS = { src: 'source', dst: 'destination', interface_id: 'ENI', vpc_id: 'VPC', subnet_id: 'subnet', flow_direction: 'direction' };

function render(root, { params, signal }) {
  const get = (name, fallback) => params.get(name) || fallback;
  const by = input('talkers-by', get('by', PRESETS[0][0]), { list: 'talkers-by-options', size: 36, spellcheck: 'false' });
  const form = h('form', { class: 'controls', testid: 'talkers-form' },
    field('group by (flow columns, comma-separated)', by, 'wide'),
    h('datalist', { id: 'talkers-by-options' }, PRESETS.map(([value, label]) => h('option', { value }, label))),
    field('rank by', select('talkers-metric', ['bytes', 'packets', 'records'], get('metric', 'bytes'))),
    field('since', input('talkers-since', get('since', '1h'), { size: 10 })),
    field('until', input('talkers-until', get('until', ''), { size: 10, placeholder: 'now' })),
    field('rows', input('talkers-limit', get('limit', '20'), { type: 'number', min: 1, max: 1000 })),
    h('button', { type: 'submit', id: 'talkers-run', testid: 'talkers-run' }, 'Show'),
  );
  const presets = h('div', { class: 'controls', testid: 'talkers-presets' }, PRESETS.map(([value, label, key]) =>
    h('button', { type: 'button', class: 'ghost small', testid: `talkers-preset-${key}`, onclick: () => {
      by.value = value;
      load();
    } }, label)));
  const errors = banner('talkers-error');
  const meta = h('p', { class: 'meta', testid: 'talkers-meta' });
  const table = h('div', { testid: 'talkers-table' });
  root.append(h('h1', {}, 'Top talkers'), h('section', { class: 'card' }, form, presets, errors.el), h('section', { class: 'card' }, meta, table));

  async function load() {
    const values = formValues(form);
    errors.clear();
    placeholder(table, 'loading', 'Loading…');
    try {
      const data = await report('top-talkers', {
        by: values['talkers-by'].replace(/\s+/g, ''), metric: values['talkers-metric'],
        since: values['talkers-since'], until: values['talkers-until'], limit: values['talkers-limit'],
      }, signal);
      meta.textContent = `${data.rows.length} rows, by ${values['talkers-metric']}, ${new Date(data.since * 1000).toISOString()} – ${new Date(data.until * 1000).toISOString()}, from ${data.table}`;
      renderTable(table, data.columns, data.rows, { labels: LABELS, empty: 'No flows in this range.' });
    } catch (error) {
      if (aborted(error)) return;
      errors.show(error);
      placeholder(table, 'error', 'Could not load top talkers.');
    }
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    load();
  });
  load();
}

export default { id: 'talkers', title: 'Top talkers', render };
