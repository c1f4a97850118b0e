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
    await fill();
    say(granted ? 'Saved.' : 'Saved (no host permission for the server; it must allow this extension by CORS).');
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

fill();
