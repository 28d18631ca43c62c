// Alarms: GET /alerts (the newest state of each alert), newest first, refreshed every 5 s.
// Alerts new since the previous refresh are marked; open details stay open across refreshes.

import { aborted, api } from './api.js';
import { banner, checkbox, field, fmtCount, fmtTime, formValues, h, input, placeholder, select, toDate } from './ui.js';

const REFRESH_MS = 5_000;
const DETECTORS = ['address_scan', 'port_scan', 'threat_ip', 'uncommon_protocol', 'broadcast_storm', 'bandwidth_overuse'];
const SEVERITIES = ['low', 'medium', 'high', 'critical'];
const SAMPLE_FIELDS = ['interface-id', 'srcaddr', 'dstaddr', 'srcport', 'dstport', 'protocol', 'packets', 'bytes', 'action', 'tcp-flags'];

/** A JSON value the API may send as text (sample-flows is JSON text; counts may be a map's repr). */
export function structured(value) {
  if (value === null || value === undefined || typeof value === 'object') return value;
  for (const text of [String(value), String(value).replace(/'/g, '"')]) {
    try {
      return JSON.parse(text);
    } catch {
      // not JSON: try the next spelling
    }
  }
  return null;
}

function alarmItem(alert, { fresh, open }) {
  const id = alert['alert-id'];
  const severity = SEVERITIES.includes(alert.severity) ? alert.severity : 'low';
  const counts = structured(alert.counts);
  const samples = structured(alert['sample-flows']);
  const details = h('details', { testid: 'alarm-details', open },
    h('summary', {}, 'evidence'),
    counts && typeof counts === 'object'
      ? h('dl', { class: 'counts' }, Object.entries(counts).map(([k, v]) => [h('dt', {}, k), h('dd', {}, fmtCount(v))]))
      : h('p', { class: 'meta' }, String(alert.counts ?? '')),
    Array.isArray(samples) && samples.length
      ? h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, SAMPLE_FIELDS.map((f) => h('th', {}, f)))),
        h('tbody', {}, samples.map((s) => h('tr', {}, SAMPLE_FIELDS.map((f) => h('td', { class: 'mono' }, String(s[f] ?? ''))))))))
      : null,
    h('p', { class: 'meta mono' }, `alert ${id}`),
  );
  return h('li', {
    class: `sev-${severity}${fresh ? ' fresh' : ''}`, testid: 'alarm',
    dataset: { alertId: id, severity, state: alert.state, detector: alert.detector },
  },
  h('div', { class: 'alarm-head' },
    h('span', { class: `sev sev-${severity}`, testid: 'alarm-severity' }, severity),
    h('span', { class: 'alarm-summary', testid: 'alarm-summary' }, alert.summary || alert.detector),
    h('span', { class: 'tag', testid: 'alarm-state' }, alert.state),
    h('span', { class: 'meta' }, alert.detector),
  ),
  h('div', { class: 'meta' },
    `ENI ${alert['interface-id'] ?? '-'} · ${alert.source ?? '-'} → ${alert.target ?? '-'} · `,
    `seen ${fmtTime(alert['first-seen'])} – ${fmtTime(alert['last-seen'])} · raised ${fmtTime(alert['raised-at'])}`,
    alert.updates ? ` · ${fmtCount(alert.updates)} update${alert.updates === 1 ? '' : 's'}` : '',
  ),
  details);
}

function render(root, { params, signal }) {
  const get = (name, fallback) => params.get(name) || fallback;
  const form = h('form', { class: 'controls', testid: 'alarms-form' },
    field('since', input('alarms-since', get('since', '24h'), { size: 8 })),
    field('state', select('alarms-state', [['', 'any'], 'open', 'closed'], get('state', ''))),
    field('severity', select('alarms-severity', [['', 'any'], ...SEVERITIES], get('severity', ''))),
    field('detector', select('alarms-detector', [['', 'any'], ...DETECTORS], get('detector', ''))),
    h('button', { type: 'submit', id: 'alarms-refresh', testid: 'alarms-refresh' }, 'Refresh'),
    checkbox('alarms-auto', `refresh every ${REFRESH_MS / 1000} s`, true),
  );
  const errors = banner('alarms-error');
  const updated = h('p', { class: 'meta', testid: 'alarms-updated', 'aria-live': 'polite' });
  const list = h('ol', { class: 'alarms', id: 'alarms-list', testid: 'alarms-list', dataset: { state: 'loading' } });
  const empty = h('div', { testid: 'alarms-empty' });
  placeholder(empty, 'loading', 'Loading…');
  root.append(h('h1', {}, 'Alarms'), h('section', { class: 'card' }, form, errors.el, updated), empty, list);

  let timer = null;
  let seen = null; // alert ids of the previous refresh (null before the first)
  async function load() {
    clearTimeout(timer);
    const values = formValues(form);
    try {
      const data = await api.get('/alerts', {
        since: values['alarms-since'], state: values['alarms-state'], severity: values['alarms-severity'],
        detector: values['alarms-detector'], limit: 100,
      }, signal);
      errors.clear();
      const alerts = [...data.alerts].sort((a, b) => (toDate(b['raised-at']) ?? 0) - (toDate(a['raised-at']) ?? 0));
      const open = new Set([...list.querySelectorAll('li')].filter((li) => li.querySelector('details').open).map((li) => li.dataset.alertId));
      list.replaceChildren(...alerts.map((a) => alarmItem(a, { fresh: seen !== null && !seen.has(a['alert-id']), open: open.has(a['alert-id']) })));
      seen = new Set(alerts.map((a) => a['alert-id']));
      list.dataset.state = alerts.length ? 'ready' : 'empty';
      list.dataset.count = String(alerts.length);
      if (alerts.length) {
        empty.hidden = true;
      } else {
        empty.hidden = false;
        placeholder(empty, 'empty', 'No alarms in this range. Quiet is good.');
      }
      updated.textContent = `${alerts.length} alarm${alerts.length === 1 ? '' : 's'}, updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (aborted(error)) return;
      errors.show(error);
      list.dataset.state = 'error';
      if (!list.children.length) placeholder(empty, 'error', 'Could not load the alarms.');
    }
    if (!signal.aborted && form.elements['alarms-auto'].checked) timer = setTimeout(load, REFRESH_MS);
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    seen = null;
    load();
  });
  for (const name of ['alarms-state', 'alarms-severity', 'alarms-detector']) {
    form.elements[name].addEventListener('change', () => {
      seen = null;
      load();
    });
  }
  form.elements['alarms-auto'].addEventListener('change', load);
  load();
  return () => clearTimeout(timer);
}

export default { id: 'alarms', title: 'Alarms', render };
