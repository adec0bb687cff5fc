// The playground: plain JavaScript over the REST routes (same origin; a keyed server's Basic credentials ride along).
'use strict';

const $ = (id) => document.getElementById(id);
const state = { personas: [], presets: [], persona: null, lastLine: null };

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data.error && data.error.message) || `HTTP ${res.status}`);
  return data;
}

function status(text) { $('status').textContent = text; }
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c);
  return node;
}
const convPath = () => `/v1/npcs/${encodeURIComponent(state.persona.id)}/conversations/${encodeURIComponent($('conversation').value || 'playground')}`;

// --- persona editor ----------------------------------------------------------------------------------------------

function editedPersona() {
  const examples = $('f-examples').value.split('\n').filter((l) => l.includes('|')).map((l) => {
    const [player_line, ...rest] = l.split('|');
    return { player_line: player_line.trim(), npc_line: rest.join('|').trim() };
  });
  return {
    ...state.persona,
    display_name: $('f-display_name').value,
    system_prompt: $('f-system_prompt').value,
    post_history_instructions: $('f-post_history_instructions').value,
    default_preset: $('f-default_preset').value,
    example_dialogue: examples,
  };
}

function showPersona(p, { keepTranscript = false } = {}) {
  state.persona = p;
  $('f-display_name').value = p.display_name || '';
  $('f-system_prompt').value = p.system_prompt || '';
  $('f-post_history_instructions').value = p.post_history_instructions || '';
  $('f-default_preset').value = p.default_preset || '';
  $('f-examples').value = (p.example_dialogue || []).map((e) => `${e.player_line} | ${e.npc_line}`).join('\n');
  if (!keepTranscript) $('transcript').replaceChildren();
  validate();
}

// Only the fields the editor changes travel as overrides (the rest stay the stored persona's).
function personaFields() {
  const p = editedPersona();
  return {
    display_name: p.display_name, system_prompt: p.system_prompt,
    post_history_instructions: p.post_history_instructions, default_preset: p.default_preset,
    example_dialogue: p.example_dialogue,
  };
}

let validateTimer = null;
function validate() {
  clearTimeout(validateTimer);
  validateTimer = setTimeout(async () => {
    const box = $('validation');
    try {
      // A dry run with the edited fields: the server checks them as an update would, and shows the prompt.
      const text = $('line').value || 'Hello.';
      const r = await api('POST', convPath() + ':render', { text, persona: personaFields() });
      box.className = 'ok';
      box.textContent = `valid: the prompt would be ${r.prompt_tokens} tokens`;
    } catch (err) {
      box.className = 'bad';
      box.textContent = err.message;
    }
  }, 250);
}

// --- talk and inspector ------------------------------------------------------------------------------------------

function showInspection(r) {
  const rows = (r.sections || []).map((s) => el('tr', {},
    el('td', { className: 'sec-name', textContent: s.name }),
    el('td', { className: 'tok', textContent: s.tokens || 0 }),
    el('td', {}, el('pre', { textContent: s.text }))));
  const params = (r.sampling || []).map((p) =>
    `${p.name}=${p.value === undefined ? 'random' : +p.value.toFixed(4)} (${p.source}${p.preset ? ' ' + p.preset : ''})`);
  $('inspector').replaceChildren(
    el('div', { className: 'meta', textContent:
      `${r.prompt_tokens} prompt tokens; left out: ${(r.left_out || []).length} turns; grammar: ${r.grammar ? r.grammar_source : 'none'}` }),
    el('table', {}, el('tbody', {}, ...rows)),
    el('div', { className: 'meta', textContent: 'sampling: ' + params.join(', ') }),
  );
}

async function talk(line) {
  const body = { text: line };
  // The inspector shows this very line's prompt: rendered before the Talk changes the history.
  showInspection(await api('POST', convPath() + ':render', body));
  $('transcript').append(el('div', { className: 'player', textContent: `You: ${line}` }));
  const npc = el('div', { className: 'npc', textContent: `${state.persona.display_name}: ` });
  $('transcript').append(npc);
  const res = await fetch(convPath() + ':talk', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(((await res.json()).error || {}).message || `HTTP ${res.status}`);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('');
      if (!data || data === '[DONE]') continue;
      const msg = JSON.parse(data);
      if (msg.error) throw new Error(msg.error.message);
      if (msg.delta) npc.textContent += msg.delta.content || '';
      if (msg.final) status(`reply: ${msg.final.usage.completion_tokens} tokens, ${msg.final.finish_reason}`);
    }
  }
}

// --- compare -----------------------------------------------------------------------------------------------------

function variantEditor(i, preset) {
  const options = state.presets.map((p) => el('option', { value: p.name, textContent: p.name, selected: p.name === preset }));
  return el('div', { className: 'variant' },
    el('label', {}, `Variant ${i + 1} preset`, el('select', { className: 'v-preset' }, ...options)),
    el('label', {}, 'temperature', el('input', { className: 'v-temperature', type: 'number', step: '0.1', placeholder: 'preset' })),
    el('label', {}, 'seed', el('input', { className: 'v-seed', type: 'number', value: String(7 + i) })));
}

async function runCompare() {
  const variants = [...document.querySelectorAll('.variant')].map((v) => {
    const sampling = {};
    const t = v.querySelector('.v-temperature').value;
    const seed = v.querySelector('.v-seed').value;
    if (t !== '') sampling.temperature = Number(t);
    if (seed !== '') sampling.seed = seed;
    const preset = v.querySelector('.v-preset').value;
    return { label: preset, preset, sampling, persona: personaFields() };
  });
  const text = $('line').value || state.lastLine || 'Hello.';
  const r = await api('POST', convPath() + ':compare', { text, variants });
  $('compare-summary').textContent =
    `"${text}": ${r.results.length} variants in one batch (peak ${r.peak_batch} sequences, ${r.engine_steps} engine steps)`;
  $('columns').replaceChildren(...r.results.map((res) => {
    const f = res.final;
    const save = el('button', { textContent: 'Save as persona' });
    save.onclick = async () => {
      try {
        const saved = await api('PUT', `/v1/npcs/${encodeURIComponent(res.persona.id)}`, { ...res.persona, default_preset: res.label });
        showPersona(saved, { keepTranscript: true });
        status(`saved ${res.label} as ${saved.id}`);
      } catch (err) { status(err.message); }
    };
    return el('div', { className: 'column' },
      el('h3', { textContent: res.label }),
      el('div', { className: 'reply', textContent: f.message.content }),
      el('div', { className: 'meta', textContent:
        `${f.usage.prompt_tokens} prompt + ${f.usage.completion_tokens} reply tokens; ` +
        `${Math.round(f.timings.time_to_first_token_ms || 0)} ms to first token, ${Math.round(f.timings.eval_ms || 0)} ms generating` }),
      save);
  }));
}

// --- start -------------------------------------------------------------------------------------------------------

async function start() {
  const [personas, presets] = await Promise.all([api('GET', '/v1/npcs'), api('GET', '/v1/presets')]);
  state.personas = personas.personas || [];
  state.presets = presets.presets || [];
  $('f-default_preset').replaceChildren(el('option', { value: '', textContent: '(server default)' }),
    ...state.presets.map((p) => el('option', { value: p.name, textContent: p.name })));
  $('persona-select').replaceChildren(...state.personas.map((p) => el('option', { value: p.id, textContent: p.id })));
  $('persona-select').onchange = () => showPersona(state.personas.find((p) => p.id === $('persona-select').value));
  for (const id of ['f-display_name', 'f-system_prompt', 'f-post_history_instructions', 'f-examples', 'f-default_preset']) {
    $(id).addEventListener('input', validate);
  }
  $('save-persona').onclick = async () => {
    try {
      // Talk uses the stored persona: saving makes the edits the NPC's.
      showPersona(await api('PUT', `/v1/npcs/${encodeURIComponent(state.persona.id)}`, editedPersona()), { keepTranscript: true });
      status('saved');
    } catch (err) { status(err.message); }
  };
  $('talk-form').onsubmit = async (e) => {
    e.preventDefault();
    const line = $('line').value.trim();
    if (!line) return;
    state.lastLine = line;
    try { await talk(line); } catch (err) { status(err.message); }
  };
  const names = state.presets.map((p) => p.name);
  $('variants').replaceChildren(...[0, 1, 2].map((i) => variantEditor(i, names[i % names.length])));
  $('run-compare').onclick = () => runCompare().catch((err) => status(err.message));
  if (state.personas.length) showPersona(state.personas[0]);
  status('ready');
}

start().catch((err) => status(err.message));
