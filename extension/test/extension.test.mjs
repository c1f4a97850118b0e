// End-to-end: Debian's Chromium with the built extension, a real faceprov server on loopback
// (tiny freshly initialised cloak model), and a local upload page. `npm test`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  startServer, startPageServer, launch, tempDir, cleanup, sha256, freePort, median, EXT_ROOT, OTHER_SITE,
} from './harness.mjs';

const SHOTS = join(EXT_ROOT, 'screenshots');
const T = { timeout: 240000 };

let tmp; let server; let pages; let br; let page; let photo; let photoSha; let deadUrl;
const bench = {};

async function setSettings(s) {
  await br.sw.evaluate((v) => chrome.storage.local.set(v), s);
}

async function received(n, timeout = 90000) {
  await page.waitForFunction((k) => window.received.length >= k, n, { timeout, polling: 20 });
  return page.evaluate(() => window.received);
}

async function freshPage(url = pages.url) {
  if (page) await page.close();
  page = await br.context.newPage();
  await page.goto(url);
  await page.waitForFunction(() => Array.isArray(window.received));
}

function dialog() {
  return page.locator('faceprov-ui .dialog');
}

async function serverCloak(buf) {
  const t0 = performance.now();
  const r = await fetch(`${server.url}/v1/cloak?strength=mid`, {
    method: 'POST', body: buf, headers: { 'X-API-Key': server.userKey, 'Content-Type': 'image/jpeg' },
  });
  const body = Buffer.from(await r.arrayBuffer());
  return { ms: performance.now() - t0, status: r.status, headers: r.headers, body };
}

async function history() {
  const r = await fetch(`${server.url}/v1/cloaks?limit=100`, { headers: { 'X-API-Key': server.userKey } });
  assert.equal(r.status, 200);
  return (await r.json()).items;
}

async function pick(file) {
  await page.evaluate(() => { document.getElementById('file').value = ''; });
  await page.setInputFiles('#file', file);
}

before(async () => {
  tmp = tempDir();
  server = await startServer(tmp);
  pages = await startPageServer(server.photos);
  br = await launch(tmp);
  photo = join(server.photos, 'face.jpg');
  photoSha = sha256(readFileSync(photo));
  deadUrl = `http://127.0.0.1:${await freePort()}`; // nothing listens there
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  if (br) await br.context.close();
  if (pages) await pages.close();
  if (server) await server.stop();
  if (tmp) cleanup(tmp);
});

test('options page: settings persist across a reload, the key stays out of web pages', T, async () => {
  const opt = await br.context.newPage();
  await opt.goto(`chrome-extension://${br.extId}/src/options.html`);
  await opt.waitForSelector('body[data-ready="1"]');
  await opt.fill('#serverUrl', server.url + '/');
  await opt.fill('#apiKey', server.userKey);
  await opt.fill('#verifyKey', server.platformKey);
  await opt.selectOption('#strength', 'high');
  await opt.selectOption('#mode', 'sites');
  await opt.fill('#sites', 'Example.com\nhttps://photos.example.org/x\n127.0.0.1');
  await opt.click('#save');
  // saving checks the key with the server: from then on uploads follow the chosen mode
  await opt.waitForFunction(() => /accepted the key/.test(document.getElementById('status').textContent));
  assert.equal((await br.sw.evaluate(() => chrome.storage.local.get('keyVerified'))).keyVerified, server.userKey);
  // the sites where uploads are watched: this computer only, as required permissions
  assert.deepEqual(await opt.$$eval('#granted li', (lis) => lis.map((l) => l.dataset.origin)), ['http://127.0.0.1/*', 'http://localhost/*']);
  assert.equal(await opt.locator('#granted button').count(), 0);
  await opt.screenshot({ path: join(SHOTS, 'options.png'), fullPage: true });
  await opt.reload();
  await opt.waitForSelector('body[data-ready="1"]');
  assert.equal(await opt.inputValue('#serverUrl'), server.url);
  assert.equal(await opt.inputValue('#apiKey'), server.userKey);
  assert.equal(await opt.inputValue('#verifyKey'), server.platformKey);
  assert.equal(await opt.inputValue('#strength'), 'high');
  assert.equal(await opt.inputValue('#mode'), 'sites');
  assert.equal(await opt.inputValue('#sites'), 'example.com\nphotos.example.org\n127.0.0.1');
  const stored = await br.sw.evaluate(() => chrome.storage.local.get(null));
  assert.equal(stored.apiKey, server.userKey);
  // a bad URL is refused and nothing is overwritten
  await opt.fill('#serverUrl', 'ftp://nowhere');
  await opt.click('#save');
  await opt.waitForFunction(() => document.getElementById('status').className.includes('error'));
  assert.equal((await br.sw.evaluate(() => chrome.storage.local.get('serverUrl'))).serverUrl, server.url);
  // plain http to another computer is refused (photos and the key would cross the network in clear)
  await opt.evaluate(() => { document.getElementById('status').className = ''; });
  await opt.fill('#serverUrl', 'http://faceprov.example.com:8765');
  await opt.click('#save');
  await opt.waitForFunction(() => document.getElementById('status').className.includes('error'));
  assert.match(await opt.textContent('#status'), /https/);
  assert.equal((await br.sw.evaluate(() => chrome.storage.local.get('serverUrl'))).serverUrl, server.url);
  // the privacy page ships and says where photos go
  const priv = await br.context.newPage();
  await priv.goto(`chrome-extension://${br.extId}/src/privacy.html`);
  assert.match(await priv.textContent('body'), /faceprov server you configured/);
  await priv.close();
  await opt.close();

  // the content script never gets the key: pages see neither it nor any storage
  await freshPage();
  const leak = await page.evaluate((k) => document.documentElement.outerHTML.includes(k)
    || Object.keys(window).some((n) => /faceprov/i.test(n)), server.userKey);
  assert.equal(leak, false);
  await setSettings({ strength: 'mid', mode: 'always' });
});

test('file input: the page receives the cloaked photo, same name and type, new bytes', T, async () => {
  await freshPage();
  const before = (await history()).length;
  await pick(photo);
  const [got] = await received(1);
  assert.equal(got.via, 'input');
  assert.equal(got.name, 'face.jpg');
  assert.equal(got.type, 'image/jpeg');
  assert.notEqual(got.sha256, photoSha, 'the page got the original photo');
  assert.equal(got.decoded, true, got.decodeError);
  const orig = await page.evaluate(async () => {
    const b = await createImageBitmap(await (await fetch('/photos/face.jpg')).blob());
    return [b.width, b.height];
  });
  assert.deepEqual([got.width, got.height], orig);
  assert.equal(got.isTrusted, false, 're-dispatched events are untrusted (documented)');
  // the server's own record of this very file: same output hash, faces protected
  const items = await history();
  assert.equal(items.length, before + 1);
  const rec = items.find((it) => it.output_sha256 === got.sha256);
  assert.ok(rec, 'no server record has the sha256 of the file the page received');
  assert.equal(rec.input_sha256, photoSha);
  assert.ok(rec.report.faces.length >= 1, 'the server protected no face');
  assert.equal(rec.report.strength, 'mid');
  // the notice shows the server's face count (from X-Faceprov-Faces) and, as the server did not
  // measure protection on this request, says so instead of calling the faces protected
  const notice = page.locator('faceprov-ui .notice');
  await notice.waitFor();
  assert.equal(await notice.textContent(), `faceprov: ${rec.report.faces.length} face${rec.report.faces.length === 1 ? '' : 's'} cloaked (protection not measured)`);
  assert.equal(rec.report.protection.measured, false);
  await page.screenshot({ path: join(SHOTS, 'notice.png'), clip: { x: 0, y: 0, width: 960, height: 640 } });
  // the input itself now holds the cloaked file too (a form post sends it)
  const inInput = await page.evaluate(async () => {
    const f = document.getElementById('file').files[0];
    const d = await crypto.subtle.digest('SHA-256', await f.arrayBuffer());
    return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('');
  });
  assert.equal(inInput, got.sha256);
});

test('overhead of the extension per one-face photo over the server\'s own time', T, async () => {
  // Two measures. Paired: for each pick, (pick -> page has the cloaked file) minus the service
  // worker's own HTTP round trip for that very request. Unpaired: median of the same request sent
  // straight from the test. The paired one is robust on a busy machine; both are reported.
  await freshPage();
  const buf = readFileSync(photo);
  const RUNS = Number(process.env.FACEPROV_EXT_BENCH_RUNS || 5);
  const direct = [];
  const ext = [];
  const paired = [];
  const serverMs = [];
  for (let i = 0; i < RUNS; i++) {
    const d = await serverCloak(buf);
    assert.equal(d.status, 200);
    assert.equal(Number(d.headers.get('x-faceprov-faces')), 1, 'a one-face photo: the server says it protected one face');
    assert.ok(d.headers.get('x-faceprov-record-id'));
    direct.push(d.ms);
    const nBefore = await br.sw.evaluate(() => globalThis.faceprov.recentTimings.length);
    const t0 = Date.now();
    await pick(photo);
    const all = await received(i + 1);
    const total = all[i].at - t0;
    ext.push(total);
    // the tiny fresh model leaves pixels alone, so equal inputs give equal outputs: match by record id
    const timings = await br.sw.evaluate(() => globalThis.faceprov.recentTimings);
    assert.equal(timings.length, Math.min(50, nBefore + 1), 'one server request per pick');
    const rt = timings[timings.length - 1];
    const rec = (await history()).find((it) => it.id === rt.recordId);
    assert.ok(rec && rec.output_sha256 === all[i].sha256, 'the page got what the server answered');
    serverMs.push(rec.report.timings_ms.total);
    paired.push(total - rt.ms);
  }
  const overhead = median(paired);
  Object.assign(bench, {
    photo: 'right part of face-api sample2.jpg (720x1100 JPEG, one face)', runs: RUNS,
    extension_ms: Math.round(median(ext)), direct_http_ms: Math.round(median(direct)),
    server_pipeline_ms: Math.round(median(serverMs)), overhead_ms: Math.round(overhead),
    overhead_unpaired_ms: Math.round(median(ext) - median(direct)),
    overhead_runs_ms: paired.map(Math.round), extension_runs_ms: ext.map(Math.round), direct_runs_ms: direct.map(Math.round),
  });
  console.log(`FACEPROV_EXTENSION_BENCH ${JSON.stringify(bench)}`);
  if (process.env.FACEPROV_EXT_BENCH_JSON) writeFileSync(process.env.FACEPROV_EXT_BENCH_JSON, JSON.stringify(bench, null, 2));
  assert.ok(overhead < 2000, `the extension adds ${overhead} ms per one-face photo (limit 2000 ms)`);
  assert.ok(bench.overhead_unpaired_ms < 2000, `unpaired: the extension adds ${bench.overhead_unpaired_ms} ms`);
});

test('drop zone and paste target receive cloaked photos', T, async () => {
  await freshPage();
  const fire = (kind) => page.evaluate(async (k) => {
    const b = await (await fetch('/photos/face.jpg')).blob();
    const dt = new DataTransfer();
    dt.items.add(new File([b], 'dropped.jpg', { type: 'image/jpeg' }));
    if (k === 'drop') {
      document.getElementById('drop').dispatchEvent(new DragEvent('drop', { bubbles: true, cancelable: true, dataTransfer: dt }));
    } else {
      document.getElementById('paste').dispatchEvent(new ClipboardEvent('paste', { bubbles: true, cancelable: true, clipboardData: dt }));
    }
  }, kind);
  await fire('drop');
  await fire('paste');
  const got = await received(2);
  assert.deepEqual(got.map((g) => g.via).sort(), ['drop', 'paste']);
  const ids = new Set((await history()).map((it) => it.output_sha256));
  for (const g of got) {
    assert.equal(g.name, 'dropped.jpg');
    assert.equal(g.type, 'image/jpeg');
    assert.notEqual(g.sha256, photoSha);
    assert.equal(g.decoded, true);
    assert.ok(ids.has(g.sha256), `${g.via}: the server has no record of the file the page got`);
  }
});

test('modes: "ask" asks first, "sites" leaves unlisted sites alone', T, async () => {
  await setSettings({ mode: 'ask' });
  await freshPage();
  await pick(photo);
  await dialog().waitFor();
  assert.match(await dialog().textContent(), /Protect the faces/);
  assert.equal((await page.evaluate(() => window.received)).length, 0);
  await dialog().locator('button[data-choice="protect"]').click();
  const [got] = await received(1);
  assert.notEqual(got.sha256, photoSha);

  await setSettings({ mode: 'sites', sites: ['example.com'] });
  await freshPage();
  await pick(photo);
  const [plain] = await received(1);
  assert.equal(plain.sha256, photoSha, 'an unlisted site gets the photo as picked');
  assert.equal(await dialog().count(), 0);
  await setSettings({ mode: 'always', sites: [] });
});

test('a key the server has not accepted yet: uploads ask first, the first cloak confirms the key', T, async () => {
  await br.sw.evaluate(() => chrome.storage.local.remove('keyVerified'));
  await setSettings({ mode: 'always' });
  await freshPage();
  await pick(photo);
  await dialog().waitFor();
  assert.match(await dialog().textContent(), /Protect the faces[\s\S]*accepted your API key/);
  assert.equal((await page.evaluate(() => window.received)).length, 0);
  await page.screenshot({ path: join(SHOTS, 'first-upload-dialog.png'), clip: await dialog().boundingBox().then((b) => ({ x: b.x - 8, y: b.y - 8, width: b.width + 16, height: b.height + 16 })) });
  await dialog().locator('button[data-choice="protect"]').click();
  const [first] = await received(1);
  assert.notEqual(first.sha256, photoSha);
  assert.equal((await br.sw.evaluate(() => chrome.storage.local.get('keyVerified'))).keyVerified, server.userKey);
  // now "always" means always: the next upload is cloaked without a question
  await pick(photo);
  const got = await received(2);
  assert.notEqual(got[1].sha256, photoSha);
  assert.equal(await dialog().count(), 0);
});

test('the extension runs only on allowed sites: nothing is injected into a site never granted', T, async () => {
  const scripts = await br.sw.evaluate(() => chrome.scripting.getRegisteredContentScripts());
  assert.equal(scripts.length, 1);
  assert.deepEqual([...scripts[0].matches].sort(), ['http://127.0.0.1/*', 'http://localhost/*']);
  const manifest = JSON.parse(readFileSync(join(EXT_ROOT, 'manifest.json'), 'utf8'));
  assert.equal(manifest.content_scripts, undefined, 'no content script declared for every site');
  assert.deepEqual(manifest.host_permissions, ['http://127.0.0.1/*', 'http://localhost/*']);
  // the same page served under a host name the extension was never allowed on, in mode "always"
  await setSettings({ mode: 'always' });
  await freshPage(`http://${OTHER_SITE}:${pages.port}/`);
  await pick(photo);
  const [plain] = await received(1);
  assert.equal(plain.sha256, photoSha, 'a site never granted gets the photo as picked');
  assert.equal(await page.locator('faceprov-ui').count(), 0, 'and no faceprov element at all');
  // on the allowed loopback page the same upload is cloaked
  await freshPage();
  await pick(photo);
  const [cloaked] = await received(1);
  assert.notEqual(cloaked.sha256, photoSha);
});

test('server unreachable: the user is asked; cancel uploads nothing, "upload original" uploads it', T, async () => {
  await setSettings({ serverUrl: deadUrl, mode: 'always' });
  await freshPage();
  await pick(photo);
  await dialog().waitFor();
  assert.match(await dialog().textContent(), /not reachable/);
  await page.screenshot({ path: join(SHOTS, 'server-down-dialog.png'), clip: await dialog().boundingBox().then((b) => ({ x: b.x - 8, y: b.y - 8, width: b.width + 16, height: b.height + 16 })) });
  // while asking, the page has neither an event nor the file in the input
  assert.equal((await page.evaluate(() => window.received)).length, 0);
  assert.equal(await page.evaluate(() => document.getElementById('file').files.length), 0);
  // a page script cannot answer for the user (only trusted clicks count)
  await page.evaluate(() => document.querySelector('faceprov-ui').shadowRoot.querySelector('button[data-choice="original"]').click());
  assert.equal(await dialog().count(), 1);
  await dialog().locator('button[data-choice="cancel"]').click();
  await page.waitForTimeout(300);
  assert.equal((await page.evaluate(() => window.received)).length, 0);
  assert.equal(await page.evaluate(() => document.getElementById('file').files.length), 0);

  await pick(photo);
  await dialog().waitFor();
  await dialog().locator('button[data-choice="original"]').click();
  const [got] = await received(1);
  assert.equal(got.sha256, photoSha);
  assert.equal(got.name, 'face.jpg');

  // a refusing server (bad key) takes the same path
  await setSettings({ serverUrl: server.url, apiKey: 'fpk_0123456789ab_notARealKeyAtAllxxxxxxxxxxxxxxxxxxxxxxxxxx' });
  try {
    await pick(photo);
    // a key never accepted: asked first (the one-time question for a new key) ...
    await dialog().waitFor();
    assert.match(await dialog().textContent(), /accepted your API key/);
    await dialog().locator('button[data-choice="protect"]').click();
    // ... then the server's refusal, with the same choice as a server that is down
    await page.waitForFunction(() => /API key/.test(document.querySelector('faceprov-ui').shadowRoot.querySelector('.dialog')?.textContent || '')
      && !/accepted your API key/.test(document.querySelector('faceprov-ui').shadowRoot.querySelector('.dialog')?.textContent || ''));
    await dialog().locator('button[data-choice="cancel"]').click();
    await page.waitForTimeout(200);
    assert.equal((await page.evaluate(() => window.received)).length, 1);
  } finally {
    await setSettings({ apiKey: server.userKey });
  }
});

test('"Check for face swap" shows the server\'s verdict or message in a panel', T, async () => {
  await freshPage();
  // what the server itself says for this image and key
  const direct = await fetch(`${server.url}/v1/verify`, {
    method: 'POST', body: readFileSync(photo), headers: { 'X-API-Key': server.platformKey, 'Content-Type': 'image/jpeg' },
  });
  const expect = await direct.json();
  const res = await br.sw.evaluate(async (u) => {
    const tab = (await chrome.tabs.query({})).find((t) => t.url && t.url.startsWith(u));
    return globalThis.faceprov.onMenuClick({ menuItemId: globalThis.faceprov.MENU_VERIFY, srcUrl: `${u}photos/face.jpg`, frameId: 0 }, tab);
  }, pages.url);
  const panel = page.locator('faceprov-ui .panel');
  await panel.locator('[data-verdict]').waitFor();
  if (direct.ok) {
    assert.equal(await panel.locator('[data-verdict]').getAttribute('data-verdict'), String(expect.verdict));
    // the panel gives the server's one answer per side, never a name the server did not give
    const f0 = (expect.faces || [])[0];
    for (const side of ['source', 'target']) {
      if (!f0 || !f0[side]) continue;
      const text = await panel.locator(`.answer[data-side="${side}"]`).first().textContent();
      if (f0[side].identity) assert.ok(text.includes(String(f0[side].identity).slice(0, 24)), text);
      else assert.match(text, /no confident match|not checked/);
    }
  } else {
    assert.equal(res.ok, false);
    assert.equal(res.error.code, expect.error.code);
    assert.equal(await panel.locator('.message').textContent(), expect.error.message);
    if (expect.error.code === 'not_available') assert.match(await panel.textContent(), /Verification not available/);
  }
  const box = await panel.boundingBox();
  await page.screenshot({ path: join(SHOTS, 'verify-panel.png'), clip: { x: box.x - 8, y: box.y - 8, width: box.width + 16, height: box.height + 16 } });
});

test('"Cloak and download" saves a cloaked copy', T, async () => {
  await freshPage();
  const res = await br.sw.evaluate(async (u) => {
    const tab = (await chrome.tabs.query({})).find((t) => t.url && t.url.startsWith(u));
    return globalThis.faceprov.onMenuClick({ menuItemId: globalThis.faceprov.MENU_CLOAK, srcUrl: `${u}photos/face.jpg`, frameId: 0 }, tab);
  }, pages.url);
  assert.equal(res.ok, true, JSON.stringify(res));
  assert.equal(res.faces, 1);
  const item = await br.sw.evaluate(async (id) => {
    for (let i = 0; i < 100; i++) {
      const [d] = await chrome.downloads.search({ id });
      if (d && d.state !== 'in_progress') return d;
      await new Promise((r) => setTimeout(r, 100));
    }
    return null;
  }, res.downloadId);
  assert.equal(item.state, 'complete', JSON.stringify(item));
  assert.ok(item.fileSize > 1000 || item.totalBytes > 1000);
  assert.ok(item.filename && existsSync(item.filename), `downloaded file missing: ${item.filename}`);
  {
    const saved = readFileSync(item.filename);
    assert.notEqual(sha256(saved), photoSha);
    assert.ok((await history()).some((it) => it.output_sha256 === sha256(saved)));
  }
  await page.locator('faceprov-ui .notice').filter({ hasText: 'saved as cloaked-face.jpg' }).waitFor();
});

test('popup: server status, faces cloaked today, recent cloaks linking to their records', T, async () => {
  const pop = await br.context.newPage();
  await pop.setViewportSize({ width: 360, height: 470 });
  await pop.goto(`chrome-extension://${br.extId}/src/popup.html`);
  await pop.waitForSelector('body[data-ready="1"]');
  assert.equal(await pop.textContent('#health'), 'online');
  const stats = (await br.sw.evaluate(() => chrome.storage.local.get('stats'))).stats;
  assert.ok(stats.faces >= 6, JSON.stringify(stats));
  assert.equal(await pop.textContent('#today'), String(stats.faces));
  const items = await history();
  const ids = await pop.$$eval('#recent li[data-id]', (lis) => lis.map((l) => l.dataset.id));
  assert.deepEqual(ids, items.slice(-5).reverse().map((i) => i.id), 'newest first');
  await pop.screenshot({ path: join(SHOTS, 'popup.png') });
  // a record page opens from the list
  const rep = await br.context.newPage();
  await rep.goto(`chrome-extension://${br.extId}/src/report.html?id=${ids[0]}`);
  await rep.waitForSelector('table');
  assert.match(await rep.textContent('table'), new RegExp(items[items.length - 1].output_sha256));
  await rep.close();
  // and the popup says so when the server is down
  await setSettings({ serverUrl: deadUrl });
  await pop.reload();
  await pop.waitForSelector('body[data-ready="1"]');
  assert.equal(await pop.textContent('#health'), 'unreachable');
  await setSettings({ serverUrl: server.url });
  await pop.close();
});
