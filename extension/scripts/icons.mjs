// Draws the extension icons (icons/16|32|48|128.png) with no dependencies: a shield with a
// face cut out. Run once with `npm run icons`; the PNGs are committed.
import { deflateSync } from 'node:zlib';
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from './crc32.mjs';

const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', 'icons');

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

function png(w, h, rgba) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; ihdr[9] = 6;
  const raw = Buffer.alloc((w * 4 + 1) * h);
  for (let y = 0; y < h; y++) rgba.copy(raw, y * (w * 4 + 1) + 1, y * w * 4, (y + 1) * w * 4);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw, { level: 9 })), chunk('IEND', Buffer.alloc(0))]);
}

// colour at (x, y) in the unit square, or null for transparent
function shade(x, y) {
  // shield: top edge y=0.08, straight sides to y=0.55, then a curve to the tip at y=0.95
  const half = y < 0.55 ? 0.40 : 0.40 * Math.sqrt(Math.max(0, 1 - ((y - 0.55) / 0.40) ** 2));
  const inShield = y > 0.08 && y < 0.95 && Math.abs(x - 0.5) < half - (y < 0.14 ? (0.14 - y) * 0.6 : 0);
  if (!inShield) return null;
  const blue = [37, 99, 235];
  const head = (x - 0.5) ** 2 / 0.16 ** 2 + (y - 0.42) ** 2 / 0.2 ** 2 < 1;
  const eye = (x - 0.44) ** 2 + (y - 0.40) ** 2 < 0.028 ** 2 || (x - 0.56) ** 2 + (y - 0.40) ** 2 < 0.028 ** 2;
  const band = Math.abs((y - 0.42) - (x - 0.5) * -0.9) < 0.035 && head; // the "cloak" stripe
  if (head && !eye && !band) return [255, 255, 255];
  return blue;
}

for (const size of [16, 32, 48, 128]) {
  const ss = 4;
  const buf = Buffer.alloc(size * size * 4);
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      let r = 0, g = 0, b = 0, a = 0;
      for (let sy = 0; sy < ss; sy++) for (let sx = 0; sx < ss; sx++) {
        const c = shade((px + (sx + 0.5) / ss) / size, (py + (sy + 0.5) / ss) / size);
        if (c) { r += c[0]; g += c[1]; b += c[2]; a += 1; }
      }
      const i = (py * size + px) * 4;
      if (a) { buf[i] = r / a; buf[i + 1] = g / a; buf[i + 2] = b / a; buf[i + 3] = (255 * a) / (ss * ss); }
    }
  }
  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, `${size}.png`), png(size, size, buf));
}
console.log(`icons written to ${OUT}`);
