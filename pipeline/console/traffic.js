// Traffic over time: bits/s or packets/s per step, stacked by one flow column (the `traffic`
// report: the top series and the rest as "other"), with a table of each series' mean and peak.

import { aborted, report } from './api.js';
import { ChartPanel, banner, checkbox, field, fmtBits, fmtPackets, fmtProtocol, formValues, h, input, renderTable, select } from './ui.js';

const DIMENSIONS = [
  ['interface_id', 'ENI'], ['vpc_id', 'VPC'], ['subnet_id', 'subnet'], ['protocol', 'protocol'],
  ['dstport', 'destination port'], ['action', 'action'], ['flow_direction', 'direction'],
];
const STEPS = [['60', '1 min'], ['300', '5 min'], ['900', '15 min'], ['3600', '1 h']];
const REFRESH_MS = 10_000;

/** Every step of [since, until) with each series' value (0 where the report has no row). */
export function stackSeries(data, step) {
  const totals = new Map();
  const values = new Map();
  for (const { step_start: at, series, value } of data.records) {
    totals.set(series, (totals.get(series) || 0) + value);
    values.set(`${series}\u0000${at}`, value);
  }
  // The report's rank: most traffic first, "other" last.
  const names = [...totals.keys()].sort((a, b) => (a === 'other') - (b === 'other') || totals.get(b) - totals.get(a) || (a < b ? -1 : 1));
  const times = [];
  for (let t = data.since; t < data.until; t += step) times.push(t);
  const iso = (t) => new Date(t * 1000).toISOString().replace('.000Z', 'Z');
  return names.map((name) => ({ name, points: times.map((t) => [t * 1000, values.get(`${name}\u0000${iso(t)}`) || 0]) }));
}

function render(root, { params, signal }) {
  const get = (name, fallback) => params.get(name) || fallback;
  const form = h('form', { class: 'controls', testid: 'traffic-form' },
    field('stacked by', select('traffic-by', DIMENSIONS, get('by', 'interface_id'))),
    field('metric', select('traffic-metric', [['bps', 'bits/s'], ['pps', 'packets/s']], get('metric', 'bps'))),
    field('since', input('traffic-since', get('since', '1h'), { size: 10, placeholder: '1h, 24h, ISO time' })),
    field('until', input('traffic-until', get('until', ''), { size: 10, placeholder: 'now' })),
    field('step', select('traffic-step', STEPS, get('step', '60'))),
    field('top series', input('traffic-top', get('top', '10'), { type: 'number', min: 1, max: 50 })),
    h('button', { type: 'submit', id: 'traffic-refresh', testid: 'traffic-refresh' }, 'Show'),
    checkbox('traffic-auto', `refresh every ${REFRESH_MS / 1000} s`, params.get('auto') === '1'),
  );
  const errors = banner('traffic-error');
  const chart = new ChartPanel('traffic-chart');
  const meta = h('p', { class: 'meta', testid: 'traffic-meta' });
  const table = h('div', { testid: 'traffic-table' });
  root.append(
    h('h1', {}, 'Traffic'),
    h('section', { class: 'card' }, form, errors.el, chart.el, meta),
    h('section', { class: 'card' }, h('h2', {}, 'Series'), table),
  );

  let timer = null;
  async function load() {
    clearTimeout(timer);
    const values = formValues(form);
    const step = Number(values['traffic-step']);
    const metric = values['traffic-metric'];
    errors.clear();
    if (chart.chartEl.dataset.state !== 'ready') chart.state('loading', 'Loading…');
    try {
      const data = await report('traffic', {
        since: values['traffic-since'], until: values['traffic-until'], step,
        by: values['traffic-by'], metric, top: values['traffic-top'],
      }, signal);
      show(data, step, metric, values['traffic-by']);
    } catch (error) {
      if (aborted(error)) return;
      errors.show(error);
      chart.state('error', 'Could not load traffic.');
    }
    if (!signal.aborted && form.elements['traffic-auto'].checked) timer = setTimeout(load, REFRESH_MS);
  }

  function show(data, step, metric, by) {
    const format = metric === 'bps' ? fmtBits : fmtPackets;
    const label = by === 'protocol' ? fmtProtocol : String;
    meta.textContent = `${new Date(data.since * 1000).toISOString()} – ${new Date(data.until * 1000).toISOString()}, from ${data.table}`;
    const series = stackSeries(data, step);
    chart.chartEl.dataset.series = String(series.length);
    if (!series.length) {
      chart.state('empty', 'No traffic in this range.');
      renderTable(table, [], [], { empty: 'No traffic in this range.' });
      return;
    }
    chart.draw({
      tooltip: { trigger: 'axis', valueFormatter: format },
      legend: { type: 'scroll', top: 0 },
      grid: { left: 80, right: 24, top: 40, bottom: 36 },
      xAxis: { type: 'time' },
      yAxis: { type: 'value', axisLabel: { formatter: format } },
      series: series.map((s) => ({
        name: label(s.name), type: 'line', stack: 'traffic', areaStyle: { opacity: 0.6 }, showSymbol: false,
        lineStyle: { width: 1 }, emphasis: { focus: 'series' }, step: 'start', data: s.points,
      })),
    });
    const rows = series.map((s) => {
      const values = s.points.map((p) => p[1]);
      return [label(s.name), format(values.reduce((a, b) => a + b, 0) / values.length), format(Math.max(...values))];
    });
    renderTable(table, ['series', 'mean', 'peak'], rows, { formats: {} });
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    load();
  });
  form.elements['traffic-auto'].addEventListener('change', load);
  load();
  return () => {
    clearTimeout(timer);
    chart.dispose();
  };
}

export default { id: 'traffic', title: 'Traffic', render };
