// `npm run build`: checks the manifest, copies what ships (manifest, src/, icons/) to
// dist/faceprov-extension/ (load it unpacked) and zips it to dist/faceprov-extension-VERSION.zip
// for the Chrome Web Store. No dependencies: a plain ZIP writer (deflate, CRC-32) below.
import { readFileSync, writeFileSync, mkdirSync, rmSync, readdirSync, statSync, copyFileSync, existsSync } from 'node:fs';
import { deflateRawSync } from 'node:zlib';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from './crc32.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SHIP = ['manifest.json', 'src', 'icons'];

function walk(p) {
  if (statSync(p).isDirectory()) return readdirSync(p).sort().flatMap((n) => walk(join(p, n)));
  return [p];
}

function check(manifest) {
  const problems = [];
  if (manifest.manifest_version !== 3) problems.push('manifest_version must be 3');
  const refs = [manifest.background.service_worker, manifest.action.default_popup, manifest.options_ui.page,
    ...Object.values(manifest.icons), 'src/content.js'];
  // the content script is registered at run time for the sites the user granted (background.js),
  // never declared for every site: a static all-sites script would make Chrome ask for "all your
  // data on all websites" at install
  if (manifest.content_scripts) problems.push('content_scripts must not be declared statically (see background.js syncContentScripts)');
  for (const r of refs) if (!existsSync(join(ROOT, r))) problems.push(`missing file ${r}`);
  for (const f of walk(join(ROOT, 'src'))) {
    if (!/\.(js|html)$/.test(f)) continue;
    const t = readFileSync(f, 'utf8');
    if (/<script[^>]+src=["']https?:/i.test(t) || /import\s[^;]*from\s+["']https?:/.test(t) || /\beval\(|new Function\(/.test(t)) {
      problems.push(`${relative(ROOT, f)}: remotely hosted or dynamic code`);
    }
  }
  if (problems.length) throw new Error(`manifest check failed:\n  ${problems.join('\n  ')}`);
}

function dosTime(d) {
  return { time: (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1),
    date: ((d.getFullYear() - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate() };
}

export function zip(entries) { // [{ name, data: Buffer }]
  const locals = [];
  const central = [];
  let offset = 0;
  const { time, date } = dosTime(new Date(2026, 0, 1)); // fixed: the zip is reproducible
  for (const { name, data } of entries) {
    const nameBuf = Buffer.from(name, 'utf8');
    const comp = deflateRawSync(data, { level: 9 });
    const crc = crc32(data);
    const h = Buffer.alloc(30);
    h.writeUInt32LE(0x04034b50, 0); h.writeUInt16LE(20, 4); h.writeUInt16LE(0x0800, 6); h.writeUInt16LE(8, 8);
    h.writeUInt16LE(time, 10); h.writeUInt16LE(date, 12); h.writeUInt32LE(crc, 14);
    h.writeUInt32LE(comp.length, 18); h.writeUInt32LE(data.length, 22); h.writeUInt16LE(nameBuf.length, 26);
    locals.push(h, nameBuf, comp);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0); c.writeUInt16LE(20, 4); c.writeUInt16LE(20, 6); c.writeUInt16LE(0x0800, 8);
    c.writeUInt16LE(8, 10); c.writeUInt16LE(time, 12); c.writeUInt16LE(date, 14); c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(comp.length, 20); c.writeUInt32LE(data.length, 24); c.writeUInt16LE(nameBuf.length, 28);
    c.writeUInt32LE(offset, 42);
    central.push(c, nameBuf);
    offset += 30 + nameBuf.length + comp.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0); end.writeUInt16LE(entries.length, 8); end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12); end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

export function build() {
  const manifest = JSON.parse(readFileSync(join(ROOT, 'manifest.json'), 'utf8'));
  check(manifest);
  const dist = join(ROOT, 'dist');
  const unpacked = join(dist, 'faceprov-extension');
  rmSync(dist, { recursive: true, force: true });
  const entries = [];
  for (const top of SHIP) {
    for (const f of walk(join(ROOT, top))) {
      const rel = relative(ROOT, f).split(sep).join('/');
      mkdirSync(dirname(join(unpacked, rel)), { recursive: true });
      copyFileSync(f, join(unpacked, rel));
      entries.push({ name: rel, data: readFileSync(f) });
    }
  }
  const zipPath = join(dist, `faceprov-extension-${manifest.version}.zip`);
  writeFileSync(zipPath, zip(entries));
  return { unpacked, zip: zipPath, files: entries.length };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const r = build();
  console.log(`built ${r.files} files: ${relative(process.cwd(), r.unpacked)}/ and ${relative(process.cwd(), r.zip)}`);
}
