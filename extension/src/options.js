import { load, save, validate, originPattern } from './settings.js';

const $ = (id) => document.getElementById(id);
const FIELDS = ['serverUrl', 'apiKey', 'verifyKey', 'strength', 'mode'];

function say(text, error = false) {
  $('status').textContent = text;
  $('status').className = `status${error ? ' error' : ''}`;
}

async function fill() {
  const s = await load();
  for (const f of FIELDS) $(f).value = s[f];
  $('sites').value = s.sites.join('\n');
  document.body.dataset.ready = '1';
}

async function ensurePermission(serverUrl) {
  const origins = [originPattern(serverUrl)];
  if (await chrome.permissions.contains({ origins })) return true;
  try {
    return await chrome.permissions.request({ origins });
  } catch {
    return false;
  }
}

$('form').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    const v = validate({ ...Object.fromEntries(FIELDS.map((f) => [f, $(f).value])), sites: $('sites').value });
    // asked inside the click; the server sends CORS headers for extensions, so a refusal only
    // means the request goes through CORS instead of the host permission
    const granted = await ensurePermission(v.serverUrl);
    await save(v);
    await listSites();
    const note = granted ? '' : ' No host permission for the server; it must allow this extension by CORS.';
    say(`Saved. Checking the key…${note}`);
    const st = await chrome.runtime.sendMessage({ type: 'faceprov:status' });
    if (st.keyWorks) say(`Saved. The server accepted the key; uploads follow the mode you chose.${note}`);
    else say(`Saved. The key is not confirmed yet (${st.recentError || st.error || (st.hasKey ? 'server not ready' : 'no key')}): `
      + `uploads ask before cloaking until it works.${note}`, !st.hasKey || !!st.recentError);
  } catch (err) {
    say(String(err.message || err), true);
  }
});

$('test').addEventListener('click', async () => {
  say('Checking…');
  const s = await chrome.runtime.sendMessage({ type: 'faceprov:status' });
  if (s.health !== 'up') say(`Not reachable: ${s.error || ''}`, true);
  else if (!s.ready) say(`Reachable, not ready: ${s.readyReason || ''}`, true);
  else if (!s.hasKey) say('Server online; no API key set.', true);
  else if (s.recentError) say(`Server online; the key was refused: ${s.recentError}`, true);
  else say('Server online and the key works.');
});

// Sites where the upload watcher runs (background.js registers it for exactly these).
async function listSites() {
  const required = new Set(chrome.runtime.getManifest().host_permissions || []);
  const { origins = [] } = await chrome.permissions.getAll();
  const ul = $('granted');
  ul.textContent = '';
  for (const o of origins.filter((x) => /^https?:/.test(x)).sort()) {
    const li = document.createElement('li');
    li.dataset.origin = o;
    li.append(document.createTextNode(o.replace(/\/\*$/, '')));
    if (required.has(o)) {
      const m = document.createElement('span');
      m.className = 'muted';
      m.textContent = ' (this computer: always)';
      li.append(m);
    } else {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'secondary';
      b.textContent = 'Remove';
      b.addEventListener('click', async () => {
        await chrome.permissions.remove({ origins: [o] });
        await listSites();
      });
      li.append(' ', b);
    }
    ul.append(li);
  }
}

fill();
listSites();
