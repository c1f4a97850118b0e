import { load, sitePatterns, patternCovers, patternHost, siteListed, ALL_SITES } from './settings.js';

const MODES = { always: 'cloak every upload', ask: 'ask before each upload', sites: 'only on listed sites' };
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// 127.0.0.1 and localhost: granted at install for the server, so they cannot be granted as sites
const SERVER_HOSTS = new Set((chrome.runtime.getManifest().host_permissions || []).map((p) => (patternHost(p) || {}).host));

function when(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

// From the toolbar: the active tab (activeTab lets the popup read its URL). Opened in a tab of its
// own (the tests do that), ?url= names the page it is about.
async function currentTab() {
  if (params.get('url')) return { url: params.get('url'), id: undefined };
  try {
    const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
    return tab || null;
  } catch {
    return null;
  }
}

function grant(host, tab) {
  // asked at once, inside the click: Chrome shows its own prompt naming the site
  chrome.permissions.request({ origins: sitePatterns(host) }).then(async (ok) => {
    if (ok && tab && tab.id !== undefined) {
      // pages opened from now on get the content script from its registration; this one now
      await chrome.scripting.executeScript({ target: { tabId: tab.id, allFrames: true }, files: ['src/content.js'] }).catch(() => {});
    }
    await render(ok ? null : 'Not allowed: faceprov stays off on this site.');
  }, (e) => render(String(e && e.message || e)));
}

function revoke(patterns) {
  chrome.permissions.remove({ origins: patterns }).then(() => render(), (e) => render(String(e && e.message || e)));
}

async function renderSite(s, settings, note) {
  const name = $('siteName'); const state = $('siteState'); const why = $('siteWhy'); const on = $('siteOn'); const off = $('siteOff');
  on.hidden = true;
  off.hidden = true;
  const tab = await currentTab();
  let u = null;
  try { u = new URL(tab && tab.url); } catch { /* no readable URL */ }
  if (!u || !/^https?:$/.test(u.protocol)) {
    name.textContent = 'not a web page';
    state.textContent = '';
    state.className = '';
    why.textContent = 'Open this popup on a web page to let faceprov cloak uploads there.';
    return;
  }
  const host = u.hostname;
  name.textContent = host;
  const covering = s.sites.filter((p) => patternCovers(p, host));
  const own = covering.filter((p) => !ALL_SITES.includes(p));
  if (covering.length) {
    state.textContent = 'on';
    state.className = 'pill up';
    if (own.length) {
      off.hidden = false;
      off.onclick = () => revoke(own);
    }
    if (settings.mode === 'sites' && !siteListed(settings.sites, host)) {
      why.textContent = 'Allowed, but not in your site list ("only on listed sites" mode): uploads here go out as picked.';
    } else {
      why.textContent = own.length ? 'Photos you upload here go to your faceprov server first.'
        : 'faceprov may run on all sites (change that in Options).';
    }
  } else if (SERVER_HOSTS.has(host)) {
    state.textContent = 'off';
    state.className = 'pill warn';
    why.textContent = 'Pages served by this computer are covered only when faceprov may run on all sites (Options).';
  } else {
    state.textContent = 'off';
    state.className = 'pill warn';
    why.textContent = 'faceprov does not run here: uploads on this site go out as picked.';
    on.hidden = false;
    on.onclick = () => grant(host, tab);
  }
  if (note) why.textContent = note;
}

async function render(note = null) {
  const [s, settings] = await Promise.all([chrome.runtime.sendMessage({ type: 'faceprov:status' }), load()]);
  $('server').textContent = s.serverUrl;
  const h = $('health');
  $('why').textContent = '';
  if (s.health === 'up' && s.ready) { h.textContent = 'online'; h.className = 'pill up'; }
  else if (s.health === 'up') { h.textContent = 'starting'; h.className = 'pill warn'; $('why').textContent = s.readyReason || ''; }
  else { h.textContent = 'unreachable'; h.className = 'pill down'; $('why').textContent = s.error || ''; }
  const kl = $('keyline');
  kl.hidden = !!s.keyWorks;
  kl.textContent = s.keyWorks ? '' : s.hasKey
    ? `Your API key has not worked yet${s.keyProblem ? ` (${String(s.keyProblem).replace(/\.$/, '')})` : ''}: faceprov asks before each upload until it does. Check it in Options.`
    : 'No API key yet: faceprov asks before each upload and sends nothing until you choose. Set one in Options.';
  await renderSite(s, settings, note);
  $('today').textContent = String(s.today.faces);
  $('photos').textContent = `in ${s.today.photos} photo${s.today.photos === 1 ? '' : 's'}`;
  $('mode').textContent = s.keyWorks ? (MODES[s.mode] || s.mode) : `${MODES.ask} until a key works`;
  $('strength').textContent = s.strength;
  const ul = $('recent');
  ul.textContent = '';
  const items = s.recent || [];
  if (!items.length) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = s.recentError || (s.health === 'up' ? (s.hasKey ? 'No cloaks yet.' : 'History needs an API key.') : 'History needs the server.');
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

render();
