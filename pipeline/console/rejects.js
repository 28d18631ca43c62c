// Rejected flows and the rule that decided each: the `rejects-by-rule` report, and the newest
// REJECT flows from flow search — all of them, or those of the rule picked in the first table.

import { aborted, api, report } from './api.js';
import { FLOW_COLUMNS, pick, quote } from './flows.js';
import { banner, field, formValues, h, input, placeholder, renderTable } from './ui.js';

const RULE_LABELS = { rule_layer: 'layer', rule_id: 'rule', top_source: 'top source', top_source_packets: 'its packets' };

function render(root, { params, signal }) {
  const get = (name, fallback) => params.get(name) || fallback;
  const form = h('form', { class: 'controls', testid: 'rejects-form' },
    field('since', input('rejects-since', get('since', '1h'), { size: 10 })),
    field('until', input('rejects-until', get('until', ''), { size: 10, placeholder: 'now' })),
    h('button', { type: 'submit', id: 'rejects-run', testid: 'rejects-run' }, 'Show'),
  );
  const ruleErrors = banner('rejects-rules-error');
  const flowErrors = banner('rejects-flows-error');
  const rules = h('div', { testid: 'rejects-rules-table' });
  const flows = h('div', { testid: 'rejects-flows-table' });
  const chosen = h('span', { class: 'meta', testid: 'rejects-rule-filter' });
  const clear = h('button', { type: 'button', class: 'ghost small', testid: 'rejects-rule-clear', hidden: true }, 'all rules');
  const open = h('a', { href: '#/flows', testid: 'rejects-open-search' }, 'open in flow search');
  root.append(
    h('h1', {}, 'Rejected flows'),
    h('section', { class: 'card' }, form),
    h('section', { class: 'card' }, h('h2', {}, 'By deciding rule'), h('p', { class: 'hint' }, 'Pick a rule to list its flows.'), ruleErrors.el, rules),
    h('section', { class: 'card' },
      h('div', { class: 'controls' }, h('h2', {}, 'Newest rejected flows'), chosen, clear, open),
      flowErrors.el, flows),
  );

  let rule = null; // {rule_layer, rule_id} or null: every REJECT
  const range = () => {
    const values = formValues(form);
    return { since: values['rejects-since'], until: values['rejects-until'] };
  };

  async function loadRules() {
    ruleErrors.clear();
    placeholder(rules, 'loading', 'Loading…');
    try {
      const data = await report('rejects-by-rule', range(), signal);
      renderTable(rules, data.columns, data.rows, {
        labels: RULE_LABELS, empty: 'No rejected flows in this range.',
        onRow: (record, tr) => {
          for (const row of rules.querySelectorAll('tr.selected')) row.classList.remove('selected');
          tr.classList.add('selected');
          rule = record;
          loadFlows();
        },
      });
    } catch (error) {
      if (aborted(error)) return;
      ruleErrors.show(error);
      placeholder(rules, 'error', 'Could not load the rules.');
    }
  }

  async function loadFlows() {
    const filter = rule
      ? `action = REJECT and rule-layer = ${quote(rule.rule_layer)} and rule-id = ${quote(rule.rule_id)}`
      : 'action = REJECT';
    chosen.textContent = rule ? `rule ${rule.rule_layer} ${rule.rule_id}` : 'every rule';
    clear.hidden = !rule;
    open.href = `#/flows?${new URLSearchParams({ filter, ...Object.fromEntries(Object.entries(range()).filter(([, v]) => v)) })}`;
    flowErrors.clear();
    placeholder(flows, 'loading', 'Loading…');
    try {
      const data = await api.get('/api/v1/flows', { filter, ...range(), limit: 100 }, signal);
      const shown = pick(data, FLOW_COLUMNS);
      renderTable(flows, shown.columns, shown.rows, { empty: 'No rejected flows in this range.' });
    } catch (error) {
      if (aborted(error)) return;
      flowErrors.show(error);
      placeholder(flows, 'error', 'Could not load the flows.');
    }
  }

  clear.addEventListener('click', () => {
    rule = null;
    for (const row of rules.querySelectorAll('tr.selected')) row.classList.remove('selected');
    loadFlows();
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    rule = null;
    loadRules();
    loadFlows();
  });
  loadRules();
  loadFlows();
}

export default { id: 'rejects', title: 'Rejected flows', render };
