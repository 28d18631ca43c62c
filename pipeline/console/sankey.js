// Source → destination as a Sankey diagram (the `sankey` report): remote /24 or /48 prefixes
// sending to ENIs (or subnets) on the left, ENIs sending to remote prefixes on the right.

import { aborted, report } from './api.js';
import { ChartPanel, banner, escapeHtml, field, fmtBytes, fmtCount, formValues, h, input, renderTable, select } from './ui.js';

const isPrefix = (name) => name.includes('/'); // ENI and subnet ids never hold a '/'

/**
 * ECharts nodes and links from the report's links. A remote prefix is two nodes, one as a
 * source (left) and one as a destination (right): the same /24 may both send to an ENI and
 * receive from it, and a Sankey diagram must have no cycle.
 */
export function sankeyGraph(records) {
  const nodes = new Map(); // key → {name, depth, label}
  const hasIngress = records.some((r) => isPrefix(r.source));
  const inside = hasIngress ? 1 : 0;
  const node = (kind, name) => {
    const key = `${kind}:${name}`;
    if (!nodes.has(key)) nodes.set(key, { name: key, depth: kind === 'from' ? 0 : kind === 'at' ? inside : inside + 1, label: name });
    return key;
  };
  const links = records.map((r) => ({
    source: isPrefix(r.source) ? node('from', r.source) : node('at', r.source),
    target: isPrefix(r.target) ? node('to', r.target) : node('at', r.target),
    value: r.bytes,
    packets: r.packets,
  }));
  return { nodes: [...nodes.values()], links };
}

function render(root, { params, signal }) {
  const get = (name, fallback) => params.get(name) || fallback;
  const form = h('form', { class: 'controls', testid: 'sankey-form' },
    field('level', select('sankey-level', [['eni', 'ENI'], ['subnet', 'subnet']], get('level', 'eni'))),
    field('since', input('sankey-since', get('since', '1h'), { size: 10 })),
    field('until', input('sankey-until', get('until', ''), { size: 10, placeholder: 'now' })),
    field('links', input('sankey-limit', get('limit', '50'), { type: 'number', min: 1, max: 500 })),
    h('button', { type: 'submit', id: 'sankey-run', testid: 'sankey-run' }, 'Show'),
  );
  const errors = banner('sankey-error');
  const chart = new ChartPanel('sankey-chart', { tall: true });
  const meta = h('p', { class: 'meta', testid: 'sankey-meta' });
  const table = h('div', { testid: 'sankey-table' });
  root.append(
    h('h1', {}, 'Source → destination'),
    h('p', { class: 'hint' }, 'Remote addresses by /24 (IPv4) or /48 (IPv6): on the left those sending in, on the right those sent to. Widths are bytes.'),
    h('section', { class: 'card' }, form, errors.el, chart.el, meta),
    h('section', { class: 'card' }, h('h2', {}, 'Links'), table),
  );

  async function load() {
    const values = formValues(form);
    errors.clear();
    chart.state('loading', 'Loading…');
    try {
      const data = await report('sankey', {
        level: values['sankey-level'], since: values['sankey-since'], until: values['sankey-until'], limit: values['sankey-limit'],
      }, signal);
      meta.textContent = `${data.rows.length} links, ${new Date(data.since * 1000).toISOString()} – ${new Date(data.until * 1000).toISOString()}, from ${data.table}`;
      renderTable(table, data.columns, data.rows, { empty: 'No flows in this range.' });
      chart.chartEl.dataset.links = String(data.rows.length);
      if (!data.rows.length) {
        chart.state('empty', 'No flows in this range.');
        return;
      }
      const { nodes, links } = sankeyGraph(data.records);
      const labels = new Map(nodes.map((n) => [n.name, n.label]));
      chart.draw({
        tooltip: {
          trigger: 'item',
          formatter: (p) => (p.dataType === 'edge'
            ? `${escapeHtml(labels.get(p.data.source))} → ${escapeHtml(labels.get(p.data.target))}<br>${fmtBytes(p.data.value)}, ${fmtCount(p.data.packets)} packets`
            : `${escapeHtml(labels.get(p.name))}<br>${fmtBytes(p.value)}`),
        },
        series: [{
          type: 'sankey', data: nodes, links, left: 8, right: 150, top: 12, bottom: 12,
          nodeAlign: 'justify', layoutIterations: 32, emphasis: { focus: 'adjacency' },
          lineStyle: { color: 'gradient', curveness: 0.5, opacity: 0.35 },
          label: { formatter: (p) => labels.get(p.name) },
        }],
      });
    } catch (error) {
      if (aborted(error)) return;
      errors.show(error);
      chart.state('error', 'Could not load the flows.');
    }
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    load();
  });
  load();
  return () => chart.dispose();
}

export default { id: 'sankey', title: 'Sankey', render };
