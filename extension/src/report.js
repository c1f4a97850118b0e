// A cloak record from the server's history (GET /v1/cloaks/{id}, fetched by the service worker
// with the stored key), or the last face-swap panel when it could not be shown in the page.
const out = document.getElementById('out');

function row(t, k, v) {
  const tr = document.createElement('tr');
  const th = document.createElement('th');
  th.textContent = k;
  const td = document.createElement('td');
  td.textContent = v == null ? '—' : String(v);
  tr.append(th, td);
  t.append(tr);
}

async function main() {
  if (location.hash === '#panel') {
    document.getElementById('title').textContent = 'faceprov face-swap check';
    const p = await chrome.runtime.sendMessage({ type: 'faceprov:lastPanel' });
    out.className = '';
    const pre = document.createElement('pre');
    pre.textContent = p ? JSON.stringify(p.ok ? p.result : p.error, null, 2) : 'Nothing checked yet.';
    out.replaceChildren(pre);
    return;
  }
  const id = new URLSearchParams(location.search).get('id');
  const r = await chrome.runtime.sendMessage({ type: 'faceprov:record', id });
  if (!r.ok) {
    out.textContent = `Could not load record ${id}: ${r.error.message}`;
    return;
  }
  const rec = r.record;
  const rep = rec.report || {};
  const t = document.createElement('table');
  row(t, 'Record', rec.id);
  row(t, 'Created', rec.created_at);
  row(t, 'Model', rec.model ? `${rec.model.name} ${rec.model.version}` : null);
  row(t, 'Strength', rep.strength);
  row(t, 'Image', rep.format ? `${rep.format} ${rep.width}×${rep.height}` : null);
  row(t, 'Faces cloaked', (rep.faces || []).length);
  // the server's black-box measurement, when the cloak was measured (report=true); else it says so
  row(t, 'Protection', rep.protection ? rep.protection.protection : 'not measured');
  (rep.faces || []).forEach((f) => row(t, `  face ${f.index}`, `box ${f.box.map((x) => Math.round(x)).join(',')} · PSNR ${f.crop_psnr ?? '∞'} · SSIM ${f.crop_ssim}`));
  (rep.skipped || []).forEach((s) => row(t, `  skipped ${s.index}`, s.reason));
  row(t, 'Input sha256', rec.input_sha256);
  row(t, 'Output sha256', rec.output_sha256);
  row(t, 'Original kept', rec.original_retained ? 'yes' : 'no');
  out.className = '';
  out.replaceChildren(t);
}

main();
