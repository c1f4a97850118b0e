import { load, save, validate, originPattern, isLoopback, sitePatterns, patternHost, ALL_SITES } from './settings.js';

const $ = (id) => document.getElementById(id);
const FIELDS = ['serverUrl', 'apiKey', 'verifyKey', 'strength', 'mode'];
const SERVER_ORIGINS = new Set(chrome.runtime.getManifest().host_permissions || []);

function say(text, error = false, id = 'status') {
  $(id).textContent = text;
  $(id).className = `status${error ? ' error' : ''}`;
}

function keyLine(s, works, problem) {
  const k = $('keyState');
  k.hidden = works;
  k.dataset.works = works ? '1' : '0';
  k.textContent = works ? '' : s.apiKey
    ? `This key has not worked yet${problem ? ` (${String(problem).replace(/\.$/, '')})` : ''}. Until a key works, faceprov asks before every upload.`
    : 'No API key yet. Until a key works, faceprov asks before every upload (whatever you choose below).';
}

async function fill() {
  const s = await load();
  for (const f of FIELDS) $(f).value = s[f];
  $('sites').value = s.sites.join('\n');
  const st = await chrome.runtime.sendMessage({ type: 'faceprov:status' }).catch(() => null);
  keyLine(s, !!(st && st.keyWorks), st && st.keyProblem);
  await renderSites();
  document.body.dataset.ready = '1';
}

// ----------------------------------------------------------------------------- site access

async function granted() {
  const { origins = [] } = await chrome.permissions.getAll();
  return origins.filter((o) => !SERVER_ORIGINS.has(o) && patternHost(o));
}

async function renderSites() {
  const s = await load();
  const g = await granted();
  let server = '';
  try { server = originPattern(s.serverUrl); } catch { /* none */ }
  const all = ALL_SITES.every((p) => g.includes(p));
  const groups = new Map(); // "a.example (and subdomains)" -> patterns
  for (const p of g) {
    if (ALL_SITES.includes(p) || p === server) continue;
    const h = patternHost(p);
    const label = h.subdomains ? `${h.host} (and its subdomains)` : h.host;
    groups.set(label, [...(groups.get(label) || []), p]);
  }
  const ul = $('granted');
  ul.textContent = '';
  if (all) {
    const li = document.createElement('li');
    li.dataset.site = '*';
    li.textContent = 'All sites';
    ul.append(li);
  }
  for (const [label, patterns] of [...groups].sort()) {
    const li = document.createElement('li');
    li.dataset.site = label;
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'secondary';
    b.textContent = 'Remove';
    b.addEventListener('click', () => {
      chrome.permissions.remove({ origins: patterns }).then(() => say(`faceprov no longer runs on ${label}.`, false, 'siteStatus'),
        (e) => say(String(e && e.message || e), true, 'siteStatus'));
    });
    li.append(document.createTextNode(label), b);
    ul.append(li);
  }
  if (!all && !groups.size) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'No site yet: faceprov cloaks nothing until you allow a site.';
    ul.append(li);
  }
  $('allSites').hidden = all;
  $('noAllSites').hidden = !all;
  const hint = $('alwaysHint');
  hint.hidden = !(s.mode === 'always' && !all);
  hint.textContent = 'In "Always" mode faceprov still cloaks only on the sites you allowed: allow all sites here, or sites one by one from the toolbar popup.';
}

$('allSites').addEventListener('click', () => {
  chrome.permissions.request({ origins: [...ALL_SITES] }).then(
    (ok) => say(ok ? 'faceprov now runs on every site.' : 'Not allowed.', !ok, 'siteStatus'),
    (e) => say(String(e && e.message || e), true, 'siteStatus'));
});

$('noAllSites').addEventListener('click', () => {
  // Chrome withdraws every origin inside http(s)://*/* at once, the sites allowed one by one too
  chrome.permissions.remove({ origins: [...ALL_SITES] }).then(
    () => say('faceprov no longer runs on any site; allow sites again from the toolbar popup.', false, 'siteStatus'),
    (e) => say(String(e && e.message || e), true, 'siteStatus'));
});

chrome.permissions.onAdded.addListener(() => renderSites());
chrome.permissions.onRemoved.addListener(() => renderSites());

// ----------------------------------------------------------------------------- save / test

$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  let v;
  try {
    v = validate({ ...Object.fromEntries(FIELDS.map((f) => [f, $(f).value])), sites: $('sites').value });
  } catch (err) {
    say(String(err.message || err), true);
    return;
  }
  // asked at once, inside the click (Chrome wants a user gesture): the server (when it is not this
  // computer; the server also admits this extension by CORS, so a refusal is not fatal) and, in
  // "only on listed sites" mode, the listed sites
  const origins = [];
  if (!isLoopback(new URL(v.serverUrl).hostname)) origins.push(originPattern(v.serverUrl));
  if (v.mode === 'sites') for (const h of v.sites) origins.push(...sitePatterns(h));
  const asked = origins.length ? chrome.permissions.request({ origins }).catch(() => false) : Promise.resolve(true);
  (async () => {
    const granted = await asked;
    await save(v);
    say('Checking the key…');
    const k = await chrome.runtime.sendMessage({ type: 'faceprov:checkKey' });
    await fill();
    keyLine(v, k.works, k.problem);
    const parts = ['Saved.'];
    if (k.works) {
      parts.push({ always: 'The key works: photos you upload on the allowed sites are cloaked.',
        ask: 'The key works: you are asked before each upload.',
        sites: 'The key works: photos you upload on the listed sites are cloaked.' }[v.mode]);
    } else if (v.apiKey) parts.push(`The key did not work: ${k.problem}`);
    else parts.push('No API key yet.');
    if (!granted) parts.push('Chrome access was not granted (server or listed sites).');
    say(parts.join(' '), !k.works);
  })().catch((err) => say(String(err.message || err), true));
});

$('test').addEventListener('click', async () => {
  say('Checking…');
  const s = await chrome.runtime.sendMessage({ type: 'faceprov:status' });
  const st = await load();
  if (s.health !== 'up') say(`Not reachable: ${s.error || ''}`, true);
  else if (!s.ready) say(`Reachable, not ready: ${s.readyReason || ''}`, true);
  else if (!s.hasKey) say('Server online; no API key set.', true);
  else if (s.recentError) say(`Server online; the key was refused: ${s.recentError}`, true);
  else say('Server online and the key works.');
  keyLine(st, !!s.keyWorks, s.keyProblem);
});

fill();
