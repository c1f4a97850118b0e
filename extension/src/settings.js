// Settings shared by the service worker, the popup, the options page and the report page.
// They live in chrome.storage.local, which only extension pages and the service worker read:
// the content script never reads storage, it asks the service worker (see background.js), so
// the API key never reaches a web page's context.

export const DEFAULTS = Object.freeze({
  serverUrl: 'http://127.0.0.1:8765',
  apiKey: '',
  verifyKey: '', // optional key with the "platform" role for /v1/verify; falls back to apiKey
  strength: 'mid', // low | mid | high
  mode: 'always', // always | ask | sites
  sites: [], // host names for mode "sites" (a.example matches a.example and *.a.example)
  // Set once the server accepted apiKey (GET /v1/cloaks with it answered 200): { serverUrl,
  // keyHash, at }. Bound to that server URL and key, so it no longer counts once either changes
  // (save() also clears it then). Until a key works the effective mode is "ask" (see keyWorks).
  keyVerified: null,
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
  const cur = await load();
  if (('serverUrl' in v && v.serverUrl !== cur.serverUrl) || ('apiKey' in v && v.apiKey !== cur.apiKey)) v.keyVerified = null;
  await chrome.storage.local.set(v);
  return v;
}

// ----------------------------------------------------------------------------- key verification

export async function keyHash(key) {
  const d = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`faceprov-key:${key}`));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('');
}

export async function verificationFor(serverUrl, apiKey) {
  return { serverUrl, keyHash: await keyHash(apiKey), at: new Date().toISOString() };
}

// Has the server accepted the current key, at the current server URL?
export async function keyWorks(s) {
  const v = s.keyVerified;
  return !!(s.apiKey && v && v.serverUrl === s.serverUrl && v.keyHash === await keyHash(s.apiKey));
}

// The mode that applies: the user's choice once a key works, "ask" until then (uploads are
// neither sent silently nor lost silently while no working key is set).
export async function effectiveMode(s) {
  return (await keyWorks(s)) ? s.mode : 'ask';
}

// ----------------------------------------------------------------------------- site access

// The content script runs only where Chrome granted a host permission (optional_host_permissions
// in the manifest); these are the patterns asked for.
export const ALL_SITES = Object.freeze(['http://*/*', 'https://*/*']);

const IP = /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-f:]+\])$/i;

// A host name and its subdomains (an IP address: itself), on http and https.
export function sitePatterns(host) {
  const h = String(host || '').toLowerCase();
  const p = IP.test(h) ? h : `*.${h}`;
  return [`http://${p}/*`, `https://${p}/*`];
}

// 'https://*.a.example/*' -> { host: 'a.example', subdomains: true }; all sites -> host '*'.
export function patternHost(pattern) {
  const m = /^(?:\*|https?):\/\/(\*\.)?([^/:]+|\*)(?::\d+)?\/.*$/.exec(String(pattern));
  if (!m) return null;
  return { host: m[2], subdomains: !!m[1] || m[2] === '*' };
}

// Does a granted pattern cover this host name?
export function patternCovers(pattern, host) {
  const p = patternHost(pattern);
  if (!p) return false;
  const h = String(host || '').toLowerCase();
  return p.host === '*' || h === p.host || (p.subdomains && h.endsWith('.' + p.host));
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

export function today() {
  const d = new Date();
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}
