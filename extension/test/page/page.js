// The page's own code: records every file it receives (as any upload page would read it) and
// shows it. The tests read window.received.
window.received = [];

function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function record(via, file, ev, at) {
  const entry = { via, name: file.name, type: file.type, size: file.size, isTrusted: ev.isTrusted, at };
  entry.sha256 = hex(await crypto.subtle.digest('SHA-256', await file.arrayBuffer()));
  try {
    const bmp = await createImageBitmap(file);
    const c = document.createElement('canvas');
    c.width = bmp.width;
    c.height = bmp.height;
    const g = c.getContext('2d');
    g.drawImage(bmp, 0, 0);
    const px = g.getImageData(bmp.width >> 1, bmp.height >> 1, 1, 1).data;
    Object.assign(entry, { decoded: true, width: bmp.width, height: bmp.height, centre: Array.from(px) });
  } catch (e) {
    Object.assign(entry, { decoded: false, decodeError: String(e) });
  }
  window.received.push(entry);
  const tr = document.createElement('tr');
  for (const v of [via, entry.name, entry.type, entry.size, entry.sha256.slice(0, 16) + '…',
    entry.decoded ? `${entry.width}×${entry.height}` : 'no', String(entry.isTrusted)]) {
    const td = document.createElement('td');
    td.textContent = v;
    tr.append(td);
  }
  document.querySelector('#received tbody').append(tr);
}

function take(via, files, ev) {
  const at = Date.now();
  for (const f of files) record(via, f, ev, at);
}

document.getElementById('file').addEventListener('change', (e) => take('input', Array.from(e.target.files), e));
const drop = document.getElementById('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  take('drop', Array.from(e.dataTransfer.files), e);
});
document.getElementById('paste').addEventListener('paste', (e) => {
  const files = Array.from(e.clipboardData.files);
  if (files.length) {
    e.preventDefault();
    take('paste', files, e);
  }
});
