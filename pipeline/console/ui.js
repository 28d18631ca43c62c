// Small DOM helpers shared by the pages: elements, form fields, banners, tables, number and
// time formats, and a chart panel that follows the light/dark theme.

/** An element: h('button', {testid: 'x', onclick: f, class: 'ghost'}, 'text', child…). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'testid') el.dataset.testid = value;
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== 'string') el[key] = value; // value, checked, disabled…
    else el.setAttribute(key, value === true ? '' : value);
  }
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** A labelled form control. */
export const field = (label, control, cls = '') => h('label', { class: `field ${cls}`.trim() }, h('span', {}, label), control);

export function input(testid, value = '', attrs = {}) {
  return h('input', { id: testid, testid, name: testid, value: String(value ?? ''), ...attrs });
}

/** A select of `options`: [value, label] pairs or plain values. */
export function select(testid, options, value) {
  const el = h('select', { id: testid, testid, name: testid });
  for (const option of options) {
    const [v, label] = Array.isArray(option) ? option : [option, option];
    el.append(h('option', { value: v, defaultSelected: v === value }, label)); // a form's reset() comes back to it
  }
  return el;
}

export const checkbox = (testid, label, checked) =>
  h('label', { class: 'field check' }, h('input', { type: 'checkbox', id: testid, testid, name: testid, defaultChecked: !!checked }), label);

/** An error banner (role=alert), hidden while empty. */
export function banner(testid) {
  const el = h('div', { class: 'banner error', role: 'alert', testid, hidden: true });
  return {
    el,
    show(error) {
      el.textContent = typeof error === 'string' ? error : error.message;
      el.dataset.status = error && error.status !== undefined ? String(error.status) : '';
      el.hidden = false;
    },
    clear() {
      el.textContent = '';
      el.hidden = true;
    },
  };
}

/** Replace `container`'s content with a loading or empty note; data-state says which. */
export function placeholder(container, state, text) {
  container.dataset.state = state;
  container.replaceChildren(h('p', { class: 'placeholder', testid: state }, text));
}

/** Text made safe for the HTML of a chart tooltip. */
export const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// --- formats ---------------------------------------------------------------------------------

const number = new Intl.NumberFormat('en-US');
export const fmtCount = (n) => (n === null || n === undefined || n === '' ? '' : typeof n === 'number' ? number.format(n) : String(n));

function scaled(value, unit, base = 1000) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return '';
  let v = Number(value);
  const prefixes = ['', 'k', 'M', 'G', 'T', 'P'];
  let i = 0;
  while (Math.abs(v) >= base && i < prefixes.length - 1) {
    v /= base;
    i += 1;
  }
  const digits = i === 0 || Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return `${v.toFixed(i === 0 && !Number.isInteger(v) ? 1 : digits)} ${prefixes[i]}${unit}`;
}
export const fmtBits = (bps) => scaled(bps, 'b/s');
export const fmtPackets = (pps) => scaled(pps, 'p/s');
export const fmtBytes = (bytes) => scaled(bytes, 'B');

const PROTOCOLS = { 1: 'icmp', 6: 'tcp', 17: 'udp', 47: 'gre', 50: 'esp', 58: 'icmpv6' };
export const fmtProtocol = (p) => PROTOCOLS[p] ?? String(p ?? '');

/** A time from Unix seconds (or ms), ISO text or ClickHouse's 'YYYY-MM-DD hh:mm:ss' (UTC). */
export function toDate(value) {
  if (value === null || value === undefined || value === '') return null;
  if (typeof value === 'number') return new Date(value < 1e11 ? value * 1000 : value);
  let text = String(value).trim();
  if (/^\d+(\.\d+)?$/.test(text)) return toDate(Number(text));
  text = text.replace(' ', 'T');
  if (!/(Z|[+-]\d\d:?\d\d)$/.test(text)) text += 'Z';
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? null : date;
}
export function fmtTime(value) {
  const date = toDate(value);
  return date ? date.toISOString().slice(0, 19).replace('T', ' ') + 'Z' : String(value ?? '');
}

// Column formats by column name (report columns and flow-record JSON names).
export const FORMATS = {
  bytes: fmtBytes, top_source_bytes: fmtBytes,
  bps: fmtBits, peak_bps: fmtBits, p95_bps: fmtBits,
  packets: fmtCount, records: fmtCount, sources: fmtCount, top_source_packets: fmtCount,
  protocol: fmtProtocol,
  start: fmtTime, end: fmtTime, 'window-start': fmtTime, step_start: fmtTime,
};
const NUMERIC = new Set(['bytes', 'packets', 'records', 'sources', 'top_source_packets', 'srcport', 'dstport', 'bps', 'pps']);

/**
 * Render `rows` (arrays, in `columns` order) as a table into `container` (whose data-testid
 * stays), or an empty note. Rows get data-testid `${testid}-row`; `onRow(record, tr)` makes them
 * clickable.
 */
export function renderTable(container, columns, rows, { formats = FORMATS, empty = 'Nothing in this range.', onRow, labels = {} } = {}) {
  const testid = container.dataset.testid;
  if (!rows.length) {
    placeholder(container, 'empty', empty);
    return;
  }
  const head = h('tr', {}, columns.map((c) => h('th', { class: NUMERIC.has(c) ? 'num' : '', scope: 'col' }, labels[c] ?? c)));
  const body = h('tbody');
  for (const row of rows) {
    const record = Object.fromEntries(columns.map((c, i) => [c, row[i]]));
    const tr = h('tr', { testid: `${testid}-row`, class: onRow ? 'clickable' : '' });
    columns.forEach((c, i) => {
      const format = formats[c];
      const raw = row[i];
      const shown = format ? format(raw) : raw === null || raw === undefined ? '' : String(raw);
      tr.append(h('td', { class: NUMERIC.has(c) ? 'num' : '', title: format && shown !== String(raw) ? String(raw) : undefined, dataset: { column: c } }, shown));
    });
    if (onRow) {
      tr.tabIndex = 0;
      tr.addEventListener('click', () => onRow(record, tr));
      tr.addEventListener('keydown', (e) => e.key === 'Enter' && onRow(record, tr));
    }
    body.append(tr);
  }
  container.dataset.state = 'ready';
  container.dataset.rows = String(rows.length);
  container.replaceChildren(h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, head), body)));
}

// --- charts ----------------------------------------------------------------------------------

export const currentTheme = () => document.documentElement.dataset.theme || 'light';

/**
 * An ECharts chart in a panel with a loading / empty / error note. The chart element carries
 * data-testid and data-state (loading, empty, error, ready); it is drawn again on theme change.
 */
export class ChartPanel {
  constructor(testid, { tall = false } = {}) {
    this.chartEl = h('div', { class: tall ? 'chart tall' : 'chart', id: testid, testid, dataset: { state: 'loading' } });
    this.note = h('p', { class: 'placeholder', testid: `${testid}-note` }, 'Loading…');
    this.el = h('div', { class: 'chart-panel' }, this.chartEl, this.note);
    this.chart = null;
    this.option = null;
    this.onResize = () => this.chart && this.chart.resize();
    this.onTheme = () => {
      if (this.chart) this.chart.dispose();
      this.chart = null;
      if (this.option && this.chartEl.dataset.state === 'ready') this.draw(this.option);
    };
    window.addEventListener('resize', this.onResize);
    window.addEventListener('themechange', this.onTheme);
  }

  state(state, text = '') {
    this.chartEl.dataset.state = state;
    this.note.textContent = text;
    this.note.hidden = !text;
    if (state !== 'ready' && state !== 'loading' && this.chart) this.chart.clear();
  }

  draw(option) {
    this.option = option;
    if (!this.chart) {
      if (!window.echarts) throw new Error('the chart library (vendor/echarts.min.js) did not load');
      this.chart = window.echarts.init(this.chartEl, currentTheme() === 'dark' ? 'dark' : null);
    }
    this.chart.setOption({ backgroundColor: 'transparent', animation: false, useUTC: true, ...option }, true); // times in UTC, as in the tables
    this.state('ready');
  }

  dispose() {
    window.removeEventListener('resize', this.onResize);
    window.removeEventListener('themechange', this.onTheme);
    if (this.chart) this.chart.dispose();
    this.chart = null;
  }
}

/** Values of a form's named controls (checkboxes as booleans). */
export function formValues(form) {
  const values = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    values[el.name] = el.type === 'checkbox' ? el.checked : el.value.trim();
  }
  return values;
}
