// faceprov service worker: the only place that knows the server URL and the API key and the only
// place that talks to the server. Content scripts send it image bytes and get cloaked bytes back.
import { load, siteListed, today, keyFingerprint } from './settings.js';

const MENU_VERIFY = 'faceprov-verify';
const MENU_CLOAK = 'faceprov-cloak-download';
const TIMEOUT_MS = 120000;

// ----------------------------------------------------------------------------- bytes

function toBase64(u8) {
  if (typeof u8.toBase64 === 'function') return u8.toBase64();
  let s = '';
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromBase64(b64) {
  if (typeof Uint8Array.fromBase64 === 'function') return Uint8Array.fromBase64(b64);
  const s = atob(b64);
  const u8 = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) u8[i] = s.charCodeAt(i);
  return u8;
}

// ----------------------------------------------------------------------------- server calls

class ServerError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toJSON() {
    return { status: this.status, code: this.code, message: this.message };
  }
}

async function call(settings, path, { method = 'GET', body, type, key, timeout = TIMEOUT_MS } = {}) {
  const url = settings.serverUrl.replace(/\/+$/, '') + path;
  const headers = {};
  const k = key === undefined ? settings.apiKey : key;
  if (k) headers['X-API-Key'] = k;
  if (type) headers['Content-Type'] = type;
  let resp;
  try {
    resp = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(timeout), credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    const why = e && e.name === 'TimeoutError' ? 'did not answer in time' : 'is not reachable';
    throw new ServerError(0, 'unreachable', `The faceprov server at ${settings.serverUrl} ${why}.`);
  }
  if (!resp.ok) {
    let code = `http_${resp.status}`;
    let message = `The faceprov server answered ${resp.status} ${resp.statusText}.`;
    try {
      const j = await resp.json();
      if (j && j.error) {
        code = j.error.code || code;
        message = j.error.message || message;
      }
    } catch { /* not JSON */ }
    throw new ServerError(resp.status, code, message);
  }
  return resp;
}

function needKey(settings, key) {
  if (!key) {
    throw new ServerError(0, 'no_api_key', 'No faceprov API key is set: open the faceprov options and enter one.');
  }
}

async function addFacesToday(n) {
  const { stats } = await chrome.storage.local.get('stats');
  const d = today();
  const s = stats && stats.date === d ? stats : { date: d, faces: 0, photos: 0 };
  s.faces += n;
  s.photos += 1;
  await chrome.storage.local.set({ stats: s });
}

// "ask" until the key works: the service worker remembers which key the server last accepted;
// any other key (a new user, a changed key) makes uploads ask first. A refused key forgets only
// itself, so going back to the key that worked needs no new check.
async function markKey(settings, ok) {
  if (ok) await chrome.storage.local.set({ keyVerified: keyFingerprint(settings) });
  else if (settings.keyVerified === keyFingerprint(settings)) await chrome.storage.local.remove('keyVerified');
}

export async function keyWorks(settings) {
  const s = settings || (await load());
  return !!s.apiKey && s.keyVerified === keyFingerprint(s);
}

// time of each server round trip (request sent -> whole cloaked body read), for the benchmark
const recentTimings = [];

// Cloak one image. Answers { ok, b64, type, faces, skipped, recordId, summary, ms } or
// { ok: false, error: { status, code, message } }.
export async function cloakBytes(bytes, type) {
  const settings = await load();
  const t0 = performance.now();
  try {
    needKey(settings, settings.apiKey);
    const q = `?strength=${encodeURIComponent(settings.strength)}`;
    const resp = await call(settings, `/v1/cloak${q}`, { method: 'POST', body: bytes, type: type || 'application/octet-stream' });
    const out = new Uint8Array(await resp.arrayBuffer());
    const faces = Number(resp.headers.get('X-Faceprov-Faces') || 0);
    let summary = null;
    try { summary = JSON.parse(resp.headers.get('X-Faceprov-Summary') || 'null'); } catch { /* keep null */ }
    const ms = Math.round(performance.now() - t0);
    recentTimings.push({ recordId: resp.headers.get('X-Faceprov-Record-Id'), ms });
    if (recentTimings.length > 50) recentTimings.shift();
    if (faces > 0) await addFacesToday(faces);
    if (!(await keyWorks(settings))) await markKey(settings, true);
    return {
      ok: true, bytes: out, type: resp.headers.get('Content-Type') || type, faces,
      skipped: Number(resp.headers.get('X-Faceprov-Skipped') || 0),
      recordId: resp.headers.get('X-Faceprov-Record-Id'), summary, ms,
    };
  } catch (e) {
    const err = e instanceof ServerError ? e.toJSON() : { status: 0, code: 'internal', message: String(e && e.message || e) };
    if (err.status === 401 || err.status === 403) await markKey(settings, false);
    return { ok: false, error: err, ms: Math.round(performance.now() - t0) };
  }
}

export async function verifyBytes(bytes, type) {
  const settings = await load();
  const key = settings.verifyKey || settings.apiKey;
  try {
    needKey(settings, key);
    const resp = await call(settings, '/v1/verify', { method: 'POST', body: bytes, type: type || 'application/octet-stream', key });
    const ct = resp.headers.get('Content-Type') || '';
    const body = ct.includes('json') ? await resp.json() : { verdict: 'answered', raw: await resp.text() };
    if (body && typeof body.evidence_url === 'string' && body.evidence_url.startsWith('/v1/')) {
      // the evidence picture needs the key too: fetch it here, hand the page a data URL only
      try {
        const ev = await call(settings, body.evidence_url, { key });
        body.evidence = { media_type: 'image/png', base64: toBase64(new Uint8Array(await ev.arrayBuffer())) };
      } catch { /* the verdict stands without its picture */ }
    }
    return { ok: true, result: body };
  } catch (e) {
    const err = e instanceof ServerError ? e.toJSON() : { status: 0, code: 'internal', message: String(e && e.message || e) };
    return { ok: false, error: err };
  }
}

export async function serverStatus() {
  const settings = await load();
  const out = {
    serverUrl: settings.serverUrl, hasKey: !!settings.apiKey, mode: settings.mode, strength: settings.strength,
    keyWorks: await keyWorks(settings),
  };
  try {
    await call(settings, '/healthz', { key: '', timeout: 5000 });
    out.health = 'up';
    try {
      await call(settings, '/readyz', { key: '', timeout: 5000 });
      out.ready = true;
    } catch (e) {
      out.ready = false;
      out.readyReason = e.message;
    }
  } catch (e) {
    out.health = 'down';
    out.error = e.message;
  }
  const { stats } = await chrome.storage.local.get('stats');
  out.today = stats && stats.date === today() ? stats : { date: today(), faces: 0, photos: 0 };
  if (out.health === 'up' && settings.apiKey) {
    try {
      out.recent = (await recentCloaks(settings, 5)).map((it) => ({
        id: it.id, created_at: it.created_at,
        faces: Array.isArray(it.faces) ? it.faces.length : (it.report && it.report.faces ? it.report.faces.length : null),
        strength: it.report ? it.report.strength : null,
        format: it.report ? it.report.format : null,
      }));
      await markKey(settings, true);
      out.keyWorks = true;
    } catch (e) {
      out.recentError = e.message;
      if (e.status === 401 || e.status === 403) {
        await markKey(settings, false);
        out.keyWorks = false;
      }
    }
  }
  return out;
}

// GET /v1/cloaks lists oldest first; the newest few come from a short recent window, widened
// until it holds enough (pages of 1000 within a window).
async function recentCloaks(settings, n) {
  const HOUR = 3600e3;
  let items = [];
  for (const span of [HOUR, 24 * HOUR, 30 * 24 * HOUR, null]) {
    items = [];
    const since = span ? `&since=${encodeURIComponent(new Date(Date.now() - span).toISOString())}` : '';
    for (let page = 0; page < 20; page++) {
      const r = await call(settings, `/v1/cloaks?limit=1000&offset=${page * 1000}${since}`, { timeout: 10000 });
      const got = (await r.json()).items;
      items = items.concat(got).slice(-n);
      if (got.length < 1000) break;
    }
    if (items.length >= n) break;
  }
  return items.reverse();
}

export async function cloakRecord(id) {
  const settings = await load();
  try {
    const r = await call(settings, `/v1/cloaks/${encodeURIComponent(id)}`, { timeout: 10000 });
    return { ok: true, record: await r.json(), serverUrl: settings.serverUrl };
  } catch (e) {
    return { ok: false, error: e instanceof ServerError ? e.toJSON() : { message: String(e) } };
  }
}

// ----------------------------------------------------------------------------- images from pages

async function imageBytes(srcUrl, tab, frameId) {
  // 1) the service worker itself (data: URLs, the page's own origin via activeTab, CORS images)
  if (!srcUrl.startsWith('blob:')) {
    try {
      const r = await fetch(srcUrl, { credentials: 'omit' });
      if (r.ok) {
        const b = await r.blob();
        return { bytes: new Uint8Array(await b.arrayBuffer()), type: b.type || 'image/jpeg' };
      }
    } catch { /* fall through to the page */ }
  }
  // 2) the content script in the page (blob: URLs, cookies-protected images)
  if (tab && tab.id !== undefined) {
    const r = await chrome.tabs.sendMessage(tab.id, { type: 'faceprov:getImage', src: srcUrl }, { frameId: frameId || 0 });
    if (r && r.ok) return { bytes: fromBase64(r.b64), type: r.type || 'image/jpeg' };
    throw new Error(r && r.error ? r.error : 'the image could not be read');
  }
  throw new Error('the image could not be read');
}

function fileNameOf(srcUrl, type) {
  let name = 'image';
  try {
    const u = new URL(srcUrl);
    if (u.protocol === 'http:' || u.protocol === 'https:') name = decodeURIComponent(u.pathname.split('/').pop() || 'image');
  } catch { /* keep */ }
  name = name.replace(/[^\w.\- ]+/g, '_').slice(0, 100) || 'image';
  if (!/\.\w{2,5}$/.test(name)) name += { 'image/png': '.png', 'image/webp': '.webp', 'image/heic': '.heic' }[type] || '.jpg';
  return name;
}

async function toTab(tab, msg) {
  if (!tab || tab.id === undefined) return false;
  try {
    await chrome.tabs.sendMessage(tab.id, msg, { frameId: 0 });
    return true;
  } catch {
    return false;
  }
}

export async function onMenuClick(info, tab) {
  if (info.menuItemId === MENU_VERIFY) {
    await toTab(tab, { type: 'faceprov:panel', state: 'busy', src: info.srcUrl });
    let res;
    try {
      const img = await imageBytes(info.srcUrl, tab, info.frameId);
      res = await verifyBytes(img.bytes, img.type);
    } catch (e) {
      res = { ok: false, error: { status: 0, code: 'image_unreadable', message: String(e && e.message || e) } };
    }
    const panel = { type: 'faceprov:panel', state: 'done', src: info.srcUrl, ...res };
    if (!(await toTab(tab, panel))) {
      await chrome.storage.session.set({ lastPanel: panel });
      await chrome.tabs.create({ url: chrome.runtime.getURL('src/report.html#panel') });
    }
    return panel;
  }
  if (info.menuItemId === MENU_CLOAK) {
    await toTab(tab, { type: 'faceprov:notice', text: 'Cloaking faces…', busy: true });
    let img;
    try {
      img = await imageBytes(info.srcUrl, tab, info.frameId);
    } catch (e) {
      const out = { ok: false, error: { code: 'image_unreadable', message: String(e && e.message || e) } };
      await toTab(tab, { type: 'faceprov:notice', text: `Could not read the image: ${out.error.message}`, error: true });
      return out;
    }
    const r = await cloakBytes(img.bytes, img.type);
    if (!r.ok) {
      await toTab(tab, { type: 'faceprov:notice', text: `Not cloaked: ${r.error.message}`, error: true });
      return { ok: false, error: r.error };
    }
    const filename = 'cloaked-' + fileNameOf(info.srcUrl, img.type);
    const downloadId = await chrome.downloads.download({
      url: `data:${r.type};base64,${toBase64(r.bytes)}`, filename, saveAs: false, conflictAction: 'uniquify',
    });
    await toTab(tab, { type: 'faceprov:notice', text: `${cloakText(r.faces, r.summary)} — saved as ${filename}` });
    return { ok: true, downloadId, filename, faces: r.faces, recordId: r.recordId };
  }
  return null;
}

// Says what the server measured, nothing more: its black-box protection line when it measured
// one, else that the faces were cloaked and protection was not measured. A face count alone is
// not protection (the cloak may still be seen through by recognizers it was not trained on).
export function cloakText(n, summary) {
  if (!n) return 'No faces found';
  const faces = `${n} face${n === 1 ? '' : 's'}`;
  if (summary && summary.measured && summary.protection) return `${faces} ${summary.protection}`;
  return `${faces} cloaked (protection not measured)`;
}

// ----------------------------------------------------------------------------- messages

async function onContentMessage(msg, sender) {
  switch (msg && msg.type) {
    case 'faceprov:policy': {
      const s = await load();
      let host = '';
      try { host = new URL(sender.url || msg.url).hostname; } catch { /* none */ }
      const active = s.mode !== 'sites' || siteListed(s.sites, host);
      // until the server has accepted this key once, every upload asks (a new user's first
      // upload should not fail silently or go out uncloaked without a word)
      const works = await keyWorks(s);
      return { mode: works ? s.mode : 'ask', active, keyChecked: works };
    }
    case 'faceprov:cloak': {
      const r = await cloakBytes(fromBase64(msg.b64), msg.mime);
      if (!r.ok) return r;
      const { bytes, ...rest } = r;
      return { ...rest, b64: toBase64(bytes) };
    }
    default:
      return { ok: false, error: { code: 'unknown_message', message: 'unknown message' } };
  }
}

async function onExtensionMessage(msg) {
  switch (msg && msg.type) {
    case 'faceprov:status':
      return serverStatus();
    case 'faceprov:record':
      return cloakRecord(msg.id);
    case 'faceprov:syncSites':
      return syncContentScripts();
    case 'faceprov:lastPanel':
      return (await chrome.storage.session.get('lastPanel')).lastPanel || null;
    default:
      return onContentMessage(msg, {});
  }
}

chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  // extension pages (popup, options, report) may ask for status and history; web pages' content
  // scripts only for a policy and a cloak
  const fromExtensionPage = sender.id === chrome.runtime.id && !!sender.url && sender.url.startsWith(chrome.runtime.getURL(''));
  const p = fromExtensionPage ? onExtensionMessage(msg) : onContentMessage(msg, sender);
  p.then(sendResponse, (e) => sendResponse({ ok: false, error: { code: 'internal', message: String(e && e.message || e) } }));
  return true;
});

// ----------------------------------------------------------------------------- sites

// The upload watcher runs only on the sites the user granted: this computer (the required
// loopback host permissions) and each site added from the popup (an optional host permission,
// asked for inside the click). It is registered here at run time instead of in the manifest, so
// installing the extension does not grant it every website.
const SCRIPT_ID = 'faceprov-uploads';
let syncing = Promise.resolve([]);

async function syncOnce() {
  const { origins = [] } = await chrome.permissions.getAll();
  const matches = origins.filter((o) => /^https?:\/\//.test(o)).sort();
  const [have] = await chrome.scripting.getRegisteredContentScripts({ ids: [SCRIPT_ID] });
  if (!matches.length) {
    if (have) await chrome.scripting.unregisterContentScripts({ ids: [SCRIPT_ID] });
    return [];
  }
  const script = { id: SCRIPT_ID, matches, js: ['src/content.js'], runAt: 'document_start', allFrames: true, persistAcrossSessions: true };
  if (!have) await chrome.scripting.registerContentScripts([script]);
  else if (JSON.stringify([...have.matches].sort()) !== JSON.stringify(matches)) await chrome.scripting.updateContentScripts([script]);
  return matches;
}

// serialised: install, start-up and permission events may arrive together
export function syncContentScripts() {
  syncing = syncing.catch(() => []).then(syncOnce);
  return syncing;
}

chrome.permissions.onAdded.addListener(() => { syncContentScripts(); });
chrome.permissions.onRemoved.addListener(() => { syncContentScripts(); });
syncContentScripts();

// ----------------------------------------------------------------------------- menus

function createMenus() {
  chrome.contextMenus.removeAll(() => {
    chrome.contextMenus.create({ id: MENU_VERIFY, title: 'Check for face swap', contexts: ['image'] });
    chrome.contextMenus.create({ id: MENU_CLOAK, title: 'Cloak and download', contexts: ['image'] });
  });
}

chrome.runtime.onInstalled.addListener((details) => {
  createMenus();
  // a new user has no server or key yet: show the options page at once instead of failing silently
  if (details && details.reason === 'install') chrome.runtime.openOptionsPage();
});
chrome.runtime.onStartup.addListener(createMenus);
chrome.contextMenus.onClicked.addListener((info, tab) => { onMenuClick(info, tab); });

// For the tests (and debugging from the service worker console); the service worker's global
// scope is not reachable from web pages.
globalThis.faceprov = {
  onMenuClick, cloakBytes, verifyBytes, serverStatus, recentTimings, syncContentScripts, keyWorks, MENU_VERIFY, MENU_CLOAK,
};
