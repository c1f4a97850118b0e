const MODES = { always: 'cloak every upload', ask: 'ask before each upload', sites: 'only on listed sites' };
const $ = (id) => document.getElementById(id);

function when(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

async function render() {
  const s = await chrome.runtime.sendMessage({ type: 'faceprov:status' });
  $('server').textContent = s.serverUrl;
  const h = $('health');
  if (s.health === 'up' && s.ready) { h.textContent = 'online'; h.className = 'pill up'; }
  else if (s.health === 'up') { h.textContent = 'starting'; h.className = 'pill warn'; $('why').textContent = s.readyReason || ''; }
  else { h.textContent = 'unreachable'; h.className = 'pill down'; $('why').textContent = s.error || ''; }
  if (!s.hasKey) $('why').textContent = 'No API key yet: set one in Options.';
  $('today').textContent = String(s.today.faces);
  $('photos').textContent = `in ${s.today.photos} photo${s.today.photos === 1 ? '' : 's'}`;
  $('mode').textContent = s.keyWorks ? (MODES[s.mode] || s.mode) : `${MODES.ask} (until the key works)`;
  $('strength').textContent = s.strength;
  const ul = $('recent');
  ul.textContent = '';
  const items = s.recent || [];
  if (!items.length) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = s.recentError || (s.health === 'up' ? 'No cloaks yet.' : 'History needs the server.');
    ul.append(li);
  }
  for (const it of items) {
    const li = document.createElement('li');
    li.dataset.id = it.id;
    const a = document.createElement('a');
    a.href = `report.html?id=${encodeURIComponent(it.id)}`;
    a.target = '_blank';
    a.textContent = `${it.faces ?? '?'} face${it.faces === 1 ? '' : 's'} · ${it.format || ''} ${it.strength || ''}`.trim();
    const t = document.createElement('span');
    t.className = 'muted';
    t.textContent = when(it.created_at);
    li.append(a, t);
    ul.append(li);
  }
  document.body.dataset.ready = '1';
}

// The page the popup was opened over: does faceprov watch its uploads, and if not, offer to
// (an optional host permission, which Chrome only asks for inside this click).
async function renderSite() {
  let tab;
  try { [tab] = await chrome.tabs.query({ active: true, currentWindow: true }); } catch { return; }
  let u;
  try { u = new URL(tab && tab.url); } catch { return; }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return;
  const origins = [`${u.protocol}//${u.hostname}/*`];
  const on = await chrome.permissions.contains({ origins });
  $('site').hidden = false;
  $('siteText').textContent = on ? `Watching uploads on ${u.hostname}.` : `Not watching ${u.hostname}.`;
  $('addSite').hidden = on;
  $('addSite').onclick = async () => {
    let granted = false;
    try { granted = await chrome.permissions.request({ origins }); } catch { /* refused */ }
    if (!granted) return;
    await chrome.runtime.sendMessage({ type: 'faceprov:syncSites' });
    await chrome.tabs.reload(tab.id); // the watcher starts with the page
    window.close();
  };
}

render();
renderSite();
