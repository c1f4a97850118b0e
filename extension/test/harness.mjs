// Test harness: a real faceprov server (tiny fresh cloak model, fresh SQLite, keys made with the
// CLI), a static server for the test page, and Debian's Chromium with the built extension.
import { spawn, execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, copyFileSync, existsSync, createWriteStream, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, extname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { chromium } from 'playwright-core';
import { build } from '../scripts/build.mjs';

export const EXT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = resolve(EXT_ROOT, '..');
const VENV_BIN = join(REPO, '.venv', 'bin');
export const PYTHON = process.env.FACEPROV_PYTHON || join(VENV_BIN, 'python');
export const FACEPROV = process.env.FACEPROV_CLI || join(VENV_BIN, 'faceprov');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// a .localhost name: a secure context like 127.0.0.1 (the test page hashes with crypto.subtle), but
// not covered by the http://localhost/* permission
export const OTHER_SITE = 'othersite.localhost';
export const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

function run(cmd, args, opts = {}) {
  return new Promise((res, rej) => {
    execFile(cmd, args, { maxBuffer: 1 << 24, timeout: 180000, ...opts }, (err, stdout, stderr) => {
      if (err) rej(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else res(stdout);
    });
  });
}

const MODEL_PY = `
import sys, shutil
from pathlib import Path
from PIL import Image
from faceprov.cloak.model import CloakModel, CloakConfig
from faceprov import assets
CloakModel(CloakConfig(width=8, size=112, n_id=1, n_pert=1, n_feat=1, se_reduction=4)).save_pretrained(sys.argv[1])
# a one-face photo: the right part of sample2 (its other two people look down, left of x=1100)
one = Path(sys.argv[1]) / "one-face.jpg"
Image.open(assets.path("sample2")).crop((1200, 0, 1920, 1100)).save(one, quality=92)
print(assets.path("sample1"))
print(one)
`;

export async function startServer(tmp) {
  for (const p of [PYTHON, FACEPROV]) if (!existsSync(p)) throw new Error(`${p} is missing: run ops/setup.sh first`);
  const db = `sqlite:///${join(tmp, 'faceprov.sqlite')}`;
  const model = join(tmp, 'model');
  const env = { ...process.env, FACEPROV_THREADS: process.env.FACEPROV_THREADS || '2' };
  // the model (and the sample photos' paths) while the first key creates the database
  const [modelOut, userKey] = await Promise.all([
    run(PYTHON, ['-c', MODEL_PY, model], { env }),
    run(FACEPROV, ['keys', 'create', '--role', 'user', '--owner', 'tester', '--db', db], { env }),
  ]);
  const platformKey = await run(FACEPROV, ['keys', 'create', '--role', 'platform', '--owner', 'platform-tester', '--db', db], { env });
  const [group, one] = modelOut.trim().split('\n').slice(-2);
  const photos = join(tmp, 'photos');
  await run('mkdir', ['-p', photos]);
  copyFileSync(one, join(photos, 'face.jpg')); // right part of sample2: one face
  copyFileSync(group, join(photos, 'group.jpg'));
  const port = await freePort();
  const log = createWriteStream(join(tmp, 'server.log'));
  const proc = spawn(FACEPROV, ['serve', '--host', '127.0.0.1', '--port', String(port), '--db', db, '--model', model,
    '--rate-limit', '0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout.pipe(log);
  proc.stderr.pipe(log);
  const url = `http://127.0.0.1:${port}`;
  const t0 = Date.now();
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`faceprov serve exited (${proc.exitCode}):\n${readFileSync(join(tmp, 'server.log'), 'utf8').slice(-3000)}`);
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() - t0 > 180000) throw new Error('faceprov serve did not become ready in 180 s');
    await new Promise((r) => setTimeout(r, 300));
  }
  return {
    url, port, proc, photos, userKey: userKey.trim().split('\n').pop().trim(), platformKey: platformKey.trim().split('\n').pop().trim(),
    stop: () => new Promise((res) => {
      if (proc.exitCode !== null) return res();
      proc.once('exit', res);
      proc.kill('SIGTERM');
      setTimeout(() => proc.kill('SIGKILL'), 15000).unref();
    }),
  };
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.jpg': 'image/jpeg', '.png': 'image/png' };

export async function startPageServer(photos) {
  const pageDir = join(EXT_ROOT, 'test', 'page');
  const srv = createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    let file;
    if (u.pathname === '/' || u.pathname === '/index.html') file = join(pageDir, 'index.html');
    else if (u.pathname === '/page.js') file = join(pageDir, 'page.js');
    else if (/^\/photos\/[\w.-]+$/.test(u.pathname)) file = join(photos, u.pathname.slice(8));
    if (!file || !existsSync(file)) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] || 'application/octet-stream', 'Cache-Control': 'no-store' });
    res.end(readFileSync(file));
  });
  const port = await freePort();
  await new Promise((r) => srv.listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${port}/`, port, close: () => new Promise((r) => srv.close(r)) };
}

export async function launch(tmp) {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  const { unpacked } = build();
  const context = await chromium.launchPersistentContext(join(tmp, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 960, height: 640 },
    acceptDownloads: true,
    args: [`--disable-extensions-except=${unpacked}`, `--load-extension=${unpacked}`, '--no-sandbox', '--disable-gpu',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
      // a second host name for the page server that the extension was never allowed on
      `--host-resolver-rules=MAP ${OTHER_SITE} 127.0.0.1`],
  });
  let [sw] = context.serviceWorkers();
  if (!sw) sw = await context.waitForEvent('serviceworker', { timeout: 20000 });
  const extId = new URL(sw.url()).host;
  // the upload watcher is registered by the service worker at start: pages opened before that
  // would have none
  const t0 = Date.now();
  for (;;) {
    const ids = await sw.evaluate(async () => (await chrome.scripting.getRegisteredContentScripts()).map((c) => c.id));
    if (ids.length) break;
    if (Date.now() - t0 > 20000) throw new Error('the extension registered no content script in 20 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  return { context, sw, extId, unpacked };
}

export function tempDir() {
  return mkdtempSync(join(tmpdir(), 'faceprov-ext-'));
}

export function cleanup(dir) {
  if (!process.env.FACEPROV_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
