// Flow logs: list, create, edit, enable/disable and delete (GET|POST /api/v1/flow-logs,
// GET|PATCH|DELETE /api/v1/flow-logs/{id}). Changes need the API token from the header.

import { aborted, api } from './api.js';
import { banner, checkbox, field, fmtTime, formValues, h, input, placeholder, select } from './ui.js';

const SCOPE_KINDS = [['all', 'every ENI'], ['vpc', 'VPC'], ['subnet', 'subnet'], ['eni', 'ENI']];
const FILTERS = [['ALL', 'ALL: every flow'], ['ACCEPT', 'ACCEPT only'], ['REJECT', 'REJECT only']];

/** Scope choices per kind from GET /api/v1/enis: [value, label] pairs. */
export function scopeOptions(enis) {
  const vpcs = new Map(); // vpc → ENIs in it
  const subnets = new Map(); // subnet → its vpc
  for (const eni of enis) {
    if (eni.vpc && eni.vpc !== '-') vpcs.set(eni.vpc, (vpcs.get(eni.vpc) || 0) + 1);
    if (eni.subnet && eni.subnet !== '-') subnets.set(eni.subnet, eni.vpc);
  }
  const byValue = (a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
  return {
    vpc: [...vpcs].map(([vpc, n]) => [vpc, `${n} ENI${n === 1 ? '' : 's'}`]).sort(byValue),
    subnet: [...subnets].map(([subnet, vpc]) => [subnet, `in ${vpc}`]).sort(byValue),
    eni: enis.map((e) => [e.id, (e.ips || []).join(', ') || e.subnet || '']),
  };
}

function render(root, { signal }) {
  const errors = banner('flow-logs-error');
  const note = h('p', { class: 'meta', testid: 'flow-logs-note' });
  const list = h('div', { testid: 'flow-logs-table' });
  const refresh = h('button', { type: 'button', class: 'ghost small', testid: 'flow-logs-refresh' }, 'Reload');

  // --- the form: create, or edit the flow log in `editing` ---
  const heading = h('h2', { testid: 'flow-log-form-title' }, 'New flow log');
  const scopeKind = select('flow-log-scope-kind', SCOPE_KINDS, 'all');
  const scopeId = input('flow-log-scope-id', '', { list: 'flow-log-scope-options', placeholder: 'id', disabled: true, spellcheck: 'false' });
  const scopeOptionsList = h('datalist', { id: 'flow-log-scope-options' });
  const submit = h('button', { type: 'submit', id: 'flow-log-submit', testid: 'flow-log-submit' }, 'Create');
  const cancel = h('button', { type: 'button', class: 'ghost', testid: 'flow-log-cancel', hidden: true }, 'Cancel');
  const formErrors = banner('flow-log-form-error');
  const status = h('p', { class: 'banner ok', role: 'status', testid: 'flow-log-status', hidden: true });
  const form = h('form', { class: 'stack', testid: 'flow-log-form', novalidate: true },
    heading,
    field('name', input('flow-log-name', '', { maxlength: 64, required: true, autocomplete: 'off' })),
    h('div', { class: 'row' }, field('scope', scopeKind), field('scope id', scopeId), scopeOptionsList),
    h('div', { class: 'row' },
      field('filter', select('flow-log-filter', FILTERS, 'ALL')),
      field('window (s)', input('flow-log-window', '', { type: 'number', min: 5, max: 600, placeholder: "worker's" }))),
    h('fieldset', { testid: 'flow-log-destinations' }, h('legend', {}, 'destinations'),
      checkbox('flow-log-dest-store', 'store (flows table)', true),
      checkbox('flow-log-dest-topic', 'topic (security tools)', true)),
    checkbox('flow-log-enabled', 'enabled', true),
    h('div', { class: 'actions' }, submit, cancel),
    formErrors.el, status,
  );
  root.append(
    h('h1', {}, 'Flow logs'),
    h('p', { class: 'hint' }, 'What to record, where. ENIs no enabled flow log covers produce no records.'),
    h('div', { class: 'split' },
      h('section', { class: 'card' }, h('div', { class: 'controls' }, h('h2', {}, 'Flow logs'), refresh), errors.el, note, list),
      h('section', { class: 'card' }, form)),
  );

  let flowLogs = [];
  let editing = null; // the flow log being edited, or null: creating
  let scopes = { vpc: [], subnet: [], eni: [] };

  function fillScopeOptions() {
    const kind = scopeKind.value;
    scopeId.disabled = kind === 'all' || !!editing;
    scopeOptionsList.replaceChildren(...(scopes[kind] || []).map(([value, label]) => h('option', { value }, label)));
  }
  scopeKind.addEventListener('change', () => {
    scopeId.value = '';
    fillScopeOptions();
  });

  function resetForm() {
    editing = null;
    form.reset();
    heading.textContent = 'New flow log';
    submit.textContent = 'Create';
    cancel.hidden = true;
    scopeKind.disabled = false;
    formErrors.clear();
    fillScopeOptions();
  }

  function edit(flowLog) {
    resetForm();
    editing = flowLog;
    heading.textContent = `Edit ${flowLog.name} (${flowLog.id})`;
    submit.textContent = 'Save';
    cancel.hidden = false;
    const [kind, ...rest] = flowLog.scope.split(':');
    scopeKind.value = kind;
    scopeKind.disabled = true; // a flow log's scope is fixed: create another for another scope
    scopeId.value = rest.join(':');
    form.elements['flow-log-name'].value = flowLog.name;
    form.elements['flow-log-filter'].value = flowLog.filter;
    form.elements['flow-log-window'].value = String(flowLog.window_seconds);
    form.elements['flow-log-dest-store'].checked = flowLog.destinations.includes('store');
    form.elements['flow-log-dest-topic'].checked = flowLog.destinations.includes('topic');
    form.elements['flow-log-enabled'].checked = flowLog.enabled;
    fillScopeOptions();
    form.elements['flow-log-name'].focus();
  }

  function said(text) {
    status.textContent = text;
    status.hidden = !text;
  }

  function showList() {
    if (!flowLogs.length) {
      placeholder(list, 'empty', 'No flow logs yet. Create one with the form.');
      return;
    }
    const rows = flowLogs.map((f) => {
      const toggle = h('button', { type: 'button', class: 'ghost small', testid: 'flow-log-toggle' }, f.enabled ? 'Disable' : 'Enable');
      const editButton = h('button', { type: 'button', class: 'ghost small', testid: 'flow-log-edit' }, 'Edit');
      const remove = h('button', { type: 'button', class: 'danger small', testid: 'flow-log-delete' }, 'Delete');
      const actions = h('div', { class: 'actions' }, toggle, editButton, remove);
      toggle.addEventListener('click', () => change(f, { enabled: !f.enabled }, toggle));
      editButton.addEventListener('click', () => edit(f));
      remove.addEventListener('click', () => {
        // Two steps, in the page (no browser dialog): Delete, then Confirm.
        const confirm = h('button', { type: 'button', class: 'danger small', testid: 'flow-log-delete-confirm' }, `Delete ${f.name}`);
        const keep = h('button', { type: 'button', class: 'ghost small', testid: 'flow-log-delete-cancel' }, 'Keep');
        confirm.addEventListener('click', () => destroy(f, confirm));
        keep.addEventListener('click', showList);
        actions.replaceChildren(confirm, keep);
        confirm.focus();
      });
      return h('tr', { testid: 'flow-log-row', dataset: { id: f.id, enabled: String(f.enabled), name: f.name } },
        h('td', { testid: 'flow-log-name-cell' }, f.name, h('div', { class: 'meta mono' }, f.id)),
        h('td', { class: 'mono' }, f.scope),
        h('td', {}, h('span', { class: f.filter === 'REJECT' ? 'tag reject' : 'tag' }, f.filter)),
        h('td', { class: 'num' }, `${f.window_seconds} s`),
        h('td', {}, f.destinations.join(' + ')),
        h('td', {}, h('span', { class: f.enabled ? 'tag on' : 'tag off', testid: 'flow-log-enabled-tag' }, f.enabled ? 'enabled' : 'disabled')),
        h('td', { class: 'meta' }, `v${f.version} · ${f.updated_at ? fmtTime(f.updated_at) : ''}`),
        h('td', {}, actions));
    });
    const head = ['name', 'scope', 'filter', 'window', 'destinations', 'state', 'version', ''].map((c) => h('th', { scope: 'col' }, c));
    list.dataset.state = 'ready';
    list.dataset.rows = String(rows.length);
    list.replaceChildren(h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, head)), h('tbody', {}, rows))));
  }

  function put(flowLog) {
    flowLogs = [...flowLogs.filter((f) => f.id !== flowLog.id), flowLog].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    note.textContent = '';
    showList();
  }

  async function load() {
    errors.clear();
    placeholder(list, 'loading', 'Loading…');
    try {
      const data = await api.get('/api/v1/flow-logs', {}, signal);
      flowLogs = data.flow_logs;
      note.textContent = data.recording_everything ? 'No flow log was ever created: every ENI is recorded (ALL, store + topic) until the first one is.' : '';
      showList();
    } catch (error) {
      if (aborted(error)) return;
      errors.show(error);
      placeholder(list, 'error', 'Could not load the flow logs.');
    }
  }

  async function loadScopes() {
    try {
      scopes = scopeOptions((await api.get('/api/v1/enis', {}, signal)).enis);
      fillScopeOptions();
    } catch (error) {
      if (!aborted(error)) scopeId.title = `no scope suggestions: ${error.message}`; // ids can still be typed
    }
  }

  async function change(flowLog, fields, button) {
    errors.clear();
    button.disabled = true;
    try {
      put(await api.patch(`/api/v1/flow-logs/${encodeURIComponent(flowLog.id)}`, fields));
    } catch (error) {
      errors.show(error);
      button.disabled = false;
    }
  }

  async function destroy(flowLog, button) {
    errors.clear();
    button.disabled = true;
    try {
      await api.del(`/api/v1/flow-logs/${encodeURIComponent(flowLog.id)}`);
      flowLogs = flowLogs.filter((f) => f.id !== flowLog.id);
      if (editing && editing.id === flowLog.id) resetForm();
      said(`Deleted ${flowLog.name}.`);
      showList();
    } catch (error) {
      errors.show(error);
      showList();
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    formErrors.clear();
    said('');
    const v = formValues(form);
    const destinations = ['store', 'topic'].filter((d) => v[`flow-log-dest-${d}`]);
    const fields = { name: v['flow-log-name'], filter: v['flow-log-filter'], destinations, enabled: v['flow-log-enabled'] };
    if (v['flow-log-window']) fields.window_seconds = Number(v['flow-log-window']);
    const kind = scopeKind.value;
    const problems = [
      !fields.name && 'give a name',
      !editing && kind !== 'all' && !scopeId.value.trim() && `give the ${kind} id`,
      !destinations.length && 'pick at least one destination',
      fields.window_seconds !== undefined && !(Number.isInteger(fields.window_seconds) && fields.window_seconds >= 5 && fields.window_seconds <= 600) && 'the window is 5 to 600 seconds',
    ].filter(Boolean);
    if (problems.length) {
      formErrors.show(problems.join('; '));
      return;
    }
    submit.disabled = true;
    try {
      if (editing) {
        const saved = await api.patch(`/api/v1/flow-logs/${encodeURIComponent(editing.id)}`, fields);
        put(saved);
        resetForm();
        said(`Saved ${saved.name} (version ${saved.version}).`);
      } else {
        const created = await api.post('/api/v1/flow-logs', { ...fields, scope: kind === 'all' ? 'all' : `${kind}:${scopeId.value.trim()}` });
        put(created);
        resetForm();
        said(`Created ${created.name} (${created.id}).`);
      }
    } catch (error) {
      formErrors.show(error);
    } finally {
      submit.disabled = false;
    }
  });
  cancel.addEventListener('click', resetForm);
  refresh.addEventListener('click', load);
  load();
  loadScopes();
}

export default { id: 'flow-logs', title: 'Flow logs', render };
