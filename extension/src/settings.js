// Settings shared by the service worker, the popup, the options page and the report page.
// They live in chrome.storage.local, which only extension pages and the service worker read:
// the content script never reads storage, it asks the service worker (see background.js), so
// the API key never reaches a web page's context.

export const DEFAULTS = Object.freeze({
  serverUrl: 'http://127.0.0.1:8765',
  apiKey: '',
  verifyKey: '', // optional key with the "platform" role for /v1/verify; falls back to apiKey
  strength: 'mid', // low | mid | high
  mode: 'always', // always | ask | sites (uploads ask anyway until the key is shown to work)
  sites: [], // host names for mode "sites" (a.example matches a.example and *.a.example)
  keyVerified: '', // set by the service worker only: the keyFingerprint the server last accepted
});

export const MODES = ['always', 'ask', 'sites'];
export const STRENGTHS = ['low', 'mid', 'high'];

export async function load() {
  const got = await chrome.storage.local.get(Object.keys(DEFAULTS));
  return { ...DEFAULTS, ...got };
}

// Loopback servers (this computer) may use plain http; anything else must be https, or the
// photo and the API key would cross the network readable by anyone on the path.
export function isLoopback(hostname) {
  const h = String(hostname || '').toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

export function normalizeServerUrl(s) {
  const u = new URL(String(s).trim());
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('the server URL must start with http:// or https://');
  if (u.protocol === 'http:' && !isLoopback(u.hostname)) {
    throw new Error('a server other than this computer (127.0.0.1 / localhost) must use https://');
  }
  return u.origin + u.pathname.replace(/\/+$/, '');
}

export function parseSites(text) {
  const out = [];
  for (const raw of String(text).split(/[\s,]+/)) {
    let s = raw.trim().toLowerCase();
    if (!s) continue;
    try {
      if (s.includes('://')) s = new URL(s).hostname;
    } catch { continue; }
    s = s.replace(/^\*\./, '').replace(/\/.*$/, '').replace(/:\d+$/, '');
    if (s && !out.includes(s)) out.push(s);
  }
  return out;
}

export function validate(partial) {
  const v = { ...partial };
  if ('serverUrl' in v) v.serverUrl = normalizeServerUrl(v.serverUrl);
  if ('apiKey' in v) v.apiKey = String(v.apiKey).trim();
  if ('verifyKey' in v) v.verifyKey = String(v.verifyKey).trim();
  if ('strength' in v && !STRENGTHS.includes(v.strength)) throw new Error(`strength must be one of ${STRENGTHS.join(', ')}`);
  if ('mode' in v && !MODES.includes(v.mode)) throw new Error(`mode must be one of ${MODES.join(', ')}`);
  if ('sites' in v) v.sites = Array.isArray(v.sites) ? parseSites(v.sites.join('\n')) : parseSites(v.sites);
  return v;
}

export async function save(partial) {
  const v = validate(partial);
  await chrome.storage.local.set(v);
  return v;
}

export function siteListed(sites, hostname) {
  const h = String(hostname || '').toLowerCase();
  return sites.some((s) => h === s || h.endsWith('.' + s));
}

// The origin pattern to request as a host permission for the configured server.
export function originPattern(serverUrl) {
  const u = new URL(serverUrl);
  return `${u.protocol}//${u.hostname}/*`;
}

// Which key the server accepted last (stored as keyVerified by the service worker). The key
// alone: a server that is down says so in its own dialog, it does not make the key unknown.
export function keyFingerprint(s) {
  return String(s.apiKey || '');
}

export function today() {
  const d = new Date();
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}
