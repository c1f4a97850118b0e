// faceprov content script (isolated world, document_start, every frame).
//
// It swaps picked / dropped / pasted photos for cloaked copies before the page's own listeners
// run: capture-phase listeners on `window` (registered before any page script) stop the original
// event with stopImmediatePropagation(), the photo goes to the service worker (which alone holds
// the server URL and API key), and the cloaked File (same name, same type) is put in place through
// a DataTransfer; then `input` + `change` (or `drop` / `paste`) are dispatched again.
// Those re-dispatched events have `isTrusted === false`: pages that ignore untrusted events will
// not see the upload (rare; documented in the README).
(() => {
  if (globalThis.__faceprovContent) return;
  globalThis.__faceprovContent = true;

  const SUPPORTED = /^image\/(jpeg|jpg|pjpeg|png|webp|heic|heif)$/i;
  const BY_EXT = /\.(jpe?g|png|webp|heic|heif)$/i;
  const isImage = (f) => f && (SUPPORTED.test(f.type || '') || (!f.type && BY_EXT.test(f.name || '')));

  let reentry = 0; // > 0 while we dispatch our own events: let them through
  const inputs = new WeakMap(); // <input type=file> -> { busy }

  // --------------------------------------------------------------------------- helpers

  function send(msg) {
    return new Promise((resolve) => {
      try {
        chrome.runtime.sendMessage(msg, (r) => {
          if (chrome.runtime.lastError) resolve({ ok: false, error: { code: 'extension', message: chrome.runtime.lastError.message } });
          else resolve(r);
        });
      } catch (e) {
        resolve({ ok: false, error: { code: 'extension', message: String(e && e.message || e) } });
      }
    });
  }

  function readB64(blob) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => resolve(String(r.result).slice(String(r.result).indexOf(',') + 1));
      r.onerror = () => reject(r.error);
      r.readAsDataURL(blob);
    });
  }

  function fromB64(b64) {
    if (typeof Uint8Array.fromBase64 === 'function') return Uint8Array.fromBase64(b64);
    const s = atob(b64);
    const u8 = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) u8[i] = s.charCodeAt(i);
    return u8;
  }

  // The server's black-box protection line for one photo when it measured one; otherwise only
  // what is known: the faces were cloaked. Never "protected" on a face count alone.
  function facesText(n, summaries = []) {
    if (!n) return 'No faces found to cloak';
    const faces = `${n} face${n === 1 ? '' : 's'}`;
    const measured = summaries.filter((s) => s && s.measured && s.protection);
    if (!measured.length) return `${faces} cloaked (protection not measured)`;
    if (summaries.length === 1) return `${faces} ${measured[0].protection}`;
    return `${faces} cloaked; ${[...new Set(measured.map((s) => s.protection))].join(' | ')}`
      + (measured.length < summaries.length ? ` (${summaries.length - measured.length} photo(s) not measured)` : '');
  }

  // --------------------------------------------------------------------------- UI (shadow DOM)

  let host = null;
  let root = null;
  const CSS = `
    :host { all: initial; }
    .box { position: fixed; z-index: 2147483647; font: 13px/1.4 system-ui, "Segoe UI", Roboto, Ubuntu, "DejaVu Sans", Arial, sans-serif; color: #1d2430;
           background: #fff; border: 1px solid #c9d3e0; border-radius: 10px; box-shadow: 0 6px 24px rgba(0,0,0,.18); }
    .notice { right: 16px; bottom: 16px; padding: 10px 14px; display: flex; gap: 8px; align-items: center; max-width: 360px; }
    .notice.error { border-color: #e0a0a0; background: #fff6f6; }
    .dot { width: 10px; height: 10px; border-radius: 50%; background: #2f9e5b; flex: none; }
    .busy .dot { background: #d9a400; animation: p 1s infinite alternate; }
    .error .dot { background: #c0392b; }
    @keyframes p { from { opacity: .3 } to { opacity: 1 } }
    .dialog { left: 50%; top: 20%; transform: translateX(-50%); width: 380px; padding: 16px 18px; }
    .dialog h2, .panel h2 { font-size: 15px; margin: 0 0 8px; }
    .dialog p { margin: 0 0 12px; }
    .row { display: flex; gap: 8px; justify-content: flex-end; }
    button { font: inherit; padding: 6px 12px; border-radius: 6px; border: 1px solid #9aa8bb; background: #f4f6fa; cursor: pointer; }
    button.primary { background: #2563eb; border-color: #2563eb; color: #fff; }
    .panel { right: 16px; top: 16px; width: 340px; padding: 14px 16px; }
    .panel .verdict { font-size: 14px; font-weight: 600; margin: 6px 0; }
    .panel .answer { font-size: 13px; margin: 3px 0; }
    .panel .verdict.na { color: #8a5a00; } .panel .verdict.fake { color: #b42318; } .panel .verdict.real { color: #1f7a45; }
    .panel img { max-width: 100%; max-height: 220px; display: block; margin: 8px 0; border-radius: 6px; }
    .panel img.checked { max-height: 90px; }
    .panel .muted { color: #5b6778; font-size: 12px; }
    .panel pre { white-space: pre-wrap; font-size: 11px; background: #f4f6fa; padding: 6px; border-radius: 6px; max-height: 140px; overflow: auto; }
    .brand { font-weight: 600; color: #2563eb; }
  `;

  function ui() {
    if (host && host.isConnected) return root;
    host = document.createElement('faceprov-ui');
    host.setAttribute('data-faceprov', '');
    root = host.attachShadow({ mode: 'open' });
    const st = document.createElement('style');
    st.textContent = CSS;
    root.append(st);
    (document.body || document.documentElement).append(host);
    return root;
  }

  function el(tag, attrs = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }

  let noticeTimer = 0;
  function notice(text, { busy = false, error = false, ms = 6000 } = {}) {
    const r = ui();
    let n = r.querySelector('.notice');
    if (!n) {
      n = el('div', { class: 'box notice', role: 'status', 'aria-live': 'polite' }, el('span', { class: 'dot' }), el('span', { class: 'text' }));
      r.append(n);
    }
    n.className = `box notice${busy ? ' busy' : ''}${error ? ' error' : ''}`;
    n.querySelector('.text').textContent = `faceprov: ${text}`;
    clearTimeout(noticeTimer);
    if (!busy) noticeTimer = setTimeout(() => n.remove(), ms);
  }

  // A modal choice. Only trusted clicks (the user's) count: a page script cannot answer it.
  function choose(title, message, buttons) {
    return new Promise((resolve) => {
      const r = ui();
      const row = el('div', { class: 'row' });
      const d = el('div', { class: 'box dialog', role: 'alertdialog', 'aria-label': title },
        el('h2', { text: title }), el('p', { text: message }), row);
      for (const b of buttons) {
        const btn = el('button', { class: b.primary ? 'primary' : '', 'data-choice': b.value, text: b.label });
        btn.addEventListener('click', (e) => {
          if (!e.isTrusted) return;
          d.remove();
          resolve(b.value);
        });
        row.append(btn);
      }
      r.append(d);
      const first = row.querySelector('button.primary') || row.querySelector('button');
      if (first) first.focus();
    });
  }

  function panel(msg) {
    const r = ui();
    let p = r.querySelector('.panel');
    if (p) p.remove();
    const close = el('button', { 'data-choice': 'close', text: 'Close' });
    p = el('div', { class: 'box panel', role: 'dialog', 'aria-label': 'faceprov face-swap check' },
      el('h2', {}, el('span', { class: 'brand', text: 'faceprov' }), document.createTextNode(' · face-swap check')));
    if (msg.src && /^(https?:|data:image\/)/.test(msg.src)) {
      p.append(el('img', { class: 'checked', src: msg.src, alt: 'the checked image' }));
    }
    if (msg.state === 'busy') {
      p.append(el('div', { class: 'verdict', text: 'Checking…' }));
    } else if (!msg.ok) {
      const e = msg.error || {};
      const na = e.code === 'not_available';
      p.append(el('div', { class: 'verdict na', 'data-verdict': na ? 'not_available' : 'error',
        text: na ? 'Verification not available' : 'Could not check this image' }));
      p.append(el('div', { class: 'message', text: e.message || 'unknown error' }));
      p.append(el('div', { class: 'muted', text: `server answer: ${e.status || 'no answer'} ${e.code || ''}`.trim() }));
    } else {
      const res = msg.result || {};
      const v = String(res.verdict ?? res.result ?? 'unknown');
      const cls = /fake|swap|manipulated/i.test(v) ? 'fake' : /real|authentic|genuine|clean/i.test(v) ? 'real' : '';
      p.append(el('div', { class: `verdict ${cls}`, 'data-verdict': v, text: `Verdict: ${v}` }));
      const score = res.manipulated_probability ?? res.score ?? res.confidence ?? res.probability;
      if (score != null) p.append(el('div', { class: 'muted', text: res.manipulated_probability != null ? `manipulated probability ${Number(score).toFixed(2)}` : `score ${score}` }));
      const ev = res.evidence || res.evidence_image || res.image || null;
      const evImg = ev && (ev.base64 || ev.data) ? `data:${ev.media_type || ev.type || 'image/png'};base64,${ev.base64 || ev.data}`
        : typeof ev === 'string' && /^(data:image\/|https?:)/.test(ev) ? ev : null;
      if (evImg) p.append(el('img', { class: 'evidence', src: evImg, alt: 'evidence' }));
      if (Array.isArray(res.faces)) {
        for (const f of res.faces.slice(0, 4)) {
          const parts = [`face ${f.index}: manipulated p=${Number(f.fake_probability).toFixed(2)}`];
          // the server's one answer per side first (the same as its JSON and evidence picture)
          for (const [side, label] of [['source', 'pasted in'], ['target', 'whose photo']]) {
            const a = f[side];
            if (!a) continue;
            const who = a.identity ? `${String(a.identity).slice(0, 24)} (similarity ${Number(a.similarity).toFixed(2)})`
              : /^not checked/.test(a.decision || '') ? String(a.decision)
              : `no confident match${a.decision ? ` — ${String(a.decision).replace(/^abstain: /, '').slice(0, 80)}` : ''}`;
            p.append(el('div', { class: 'answer', 'data-side': side, text: `${side} (${label}): ${who}` }));
          }
          for (const [m, r] of Object.entries(f.recovery || {})) {
            for (const side of ['source', 'target']) {
              const best = ((r[side] || {}).matches || [])[0];
              if (best) parts.push(`${m} ${side} → ${String(best.identity || best.label || best.identity_id).slice(0, 24)} (${Number(best.similarity).toFixed(2)}${best.above_lfw_threshold ? ', above LFW threshold' : ''})`);
            }
          }
          p.append(el('div', { class: 'muted face-line', text: parts.join(' · ') }));
        }
      }
      if (res.matches && res.matches.length) p.append(el('pre', { text: JSON.stringify(res.matches, null, 1).slice(0, 2000) }));
      if (res.message) p.append(el('div', { class: 'message', text: String(res.message) }));
    }
    close.addEventListener('click', () => p.remove());
    p.append(el('div', { class: 'row' }, close));
    r.append(p);
  }

  // --------------------------------------------------------------------------- cloaking

  async function cloakOne(f) {
    const r = await send({ type: 'faceprov:cloak', name: f.name, mime: f.type || 'application/octet-stream', b64: await readB64(f) });
    if (!r || !r.ok) return { ok: false, error: (r && r.error) || { code: 'extension', message: 'no answer' } };
    const out = new File([fromB64(r.b64)], f.name, { type: f.type || r.type, lastModified: f.lastModified });
    return { ok: true, file: out, faces: r.faces, recordId: r.recordId, summary: r.summary };
  }

  // The files the page should get, or null to cancel (the page then gets nothing).
  async function protect(files) {
    if (!files.some(isImage)) return files;
    const policy = await send({ type: 'faceprov:policy', url: location.href });
    if (!policy || policy.ok === false || !policy.active) {
      if (policy && policy.ok === false) {
        const c = await choose('faceprov could not check this upload', `${policy.error.message} Upload the original photo, or cancel?`,
          [{ label: 'Cancel', value: 'cancel', primary: true }, { label: 'Upload original', value: 'original' }]);
        return c === 'original' ? files : null;
      }
      return files;
    }
    const images = files.filter(isImage);
    if (policy.mode === 'ask') {
      const why = policy.keyChecked === false
        ? ' (faceprov asks before every upload until the server has accepted your API key once.)' : '';
      const c = await choose('Protect the faces in this upload?',
        `${images.length} photo${images.length === 1 ? '' : 's'} for ${location.hostname}. faceprov can cloak the faces first.${why}`,
        [{ label: 'Cancel', value: 'cancel' }, { label: 'Upload original', value: 'original' }, { label: 'Protect', value: 'protect', primary: true }]);
      if (c === 'cancel') return null;
      if (c === 'original') return files;
    }
    notice(`cloaking ${images.length} photo${images.length === 1 ? '' : 's'}…`, { busy: true });
    const results = new Map();
    await Promise.all(images.map(async (f) => results.set(f, await cloakOne(f))));
    const noFace = (r) => !r.ok && (r.error.code === 'no_face' || r.error.code === 'too_small');
    const failed = images.filter((f) => !results.get(f).ok && !noFace(results.get(f)));
    let useOriginal = false;
    if (failed.length) {
      const e = results.get(failed[0]).error;
      notice(`could not protect ${failed.length} photo${failed.length === 1 ? '' : 's'}`, { error: true, ms: 8000 });
      const c = await choose(`faceprov could not protect ${failed.length === 1 ? 'this photo' : `${failed.length} photos`}`,
        `${e.message} Upload the original${failed.length === 1 ? '' : 's'} anyway, or cancel?`,
        [{ label: 'Cancel', value: 'cancel', primary: true }, { label: 'Upload original', value: 'original' }]);
      if (c !== 'original') {
        notice('upload cancelled', { ms: 4000 });
        return null;
      }
      useOriginal = true;
    }
    let faces = 0;
    const summaries = [];
    const out = files.map((f) => {
      const r = results.get(f);
      if (r && r.ok) { faces += r.faces; summaries.push(r.summary); return r.file; }
      return f;
    });
    const origs = failed.length + images.filter((f) => noFace(results.get(f))).length;
    notice(useOriginal ? `${facesText(faces, summaries)}; ${failed.length} original${failed.length === 1 ? '' : 's'} uploaded at your request`
      : origs && !faces ? 'no faces found to cloak' : facesText(faces, summaries));
    return out;
  }

  function toDataTransfer(files, strings) {
    const dt = new DataTransfer();
    for (const f of files) dt.items.add(f);
    for (const [t, v] of strings || []) { try { dt.setData(t, v); } catch { /* read-only type */ } }
    return dt;
  }

  // <input type=file>: `input` then `change` arrive together after a pick; both are held back.
  function onPick(e) {
    if (reentry) return;
    const t = e.target;
    if (!(t instanceof HTMLInputElement) || t.type !== 'file') return;
    const st = inputs.get(t);
    if (st && st.busy) { e.stopImmediatePropagation(); return; }
    const files = Array.from(t.files || []);
    if (!files.some(isImage)) return;
    e.stopImmediatePropagation();
    const s = { busy: true };
    inputs.set(t, s);
    t.files = new DataTransfer().files; // the page cannot read the original while we work
    protect(files).then((out) => {
      if (out === null) {
        t.value = ''; // the original never stays in the input
        return;
      }
      t.files = toDataTransfer(out).files;
      reentry++;
      try {
        t.dispatchEvent(new Event('input', { bubbles: true, composed: true }));
        t.dispatchEvent(new Event('change', { bubbles: true }));
      } finally { reentry--; }
    }).finally(() => { s.busy = false; });
  }

  function strings(dt) {
    const out = [];
    for (const t of Array.from(dt.types || [])) if (t !== 'Files') { try { out.push([t, dt.getData(t)]); } catch { /* skip */ } }
    return out;
  }

  function eventInit(e) {
    const init = { bubbles: true, cancelable: true, composed: true };
    for (const k of ['clientX', 'clientY', 'screenX', 'screenY', 'ctrlKey', 'shiftKey', 'altKey', 'metaKey', 'button', 'buttons']) {
      if (k in e) init[k] = e[k];
    }
    return init;
  }

  function onDrop(e) {
    if (reentry) return;
    const t = e.target;
    if (t instanceof HTMLInputElement && t.type === 'file') return; // the browser fills the input: onPick
    const dt = e.dataTransfer;
    const files = dt ? Array.from(dt.files || []) : [];
    if (!files.some(isImage)) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    const init = eventInit(e);
    const extra = strings(dt);
    protect(files).then((out) => {
      if (out === null) return;
      reentry++;
      try {
        (t.isConnected ? t : document).dispatchEvent(new DragEvent('drop', { ...init, dataTransfer: toDataTransfer(out, extra) }));
      } finally { reentry--; }
    });
  }

  function onPaste(e) {
    if (reentry) return;
    const cd = e.clipboardData;
    const files = cd ? Array.from(cd.files || []) : [];
    if (!files.some(isImage)) return;
    const t = e.target;
    e.preventDefault();
    e.stopImmediatePropagation();
    const extra = strings(cd);
    protect(files).then((out) => {
      if (out === null) return;
      reentry++;
      try {
        (t.isConnected ? t : document).dispatchEvent(new ClipboardEvent('paste', {
          bubbles: true, cancelable: true, composed: true, clipboardData: toDataTransfer(out, extra),
        }));
      } finally { reentry--; }
    });
  }

  // A form must not be sent while one of its photos is still being protected.
  function onSubmit(e) {
    const f = e.target;
    if (!(f instanceof HTMLFormElement)) return;
    for (const i of f.querySelectorAll('input[type=file]')) {
      const st = inputs.get(i);
      if (st && st.busy) {
        e.preventDefault();
        e.stopImmediatePropagation();
        notice('wait until the photos are cloaked, then send again', { busy: false, ms: 4000 });
        return;
      }
    }
  }

  window.addEventListener('input', onPick, true);
  window.addEventListener('change', onPick, true);
  window.addEventListener('drop', onDrop, true);
  window.addEventListener('paste', onPaste, true);
  window.addEventListener('submit', onSubmit, true);

  // --------------------------------------------------------------------------- from the service worker

  async function getImage(src) {
    try {
      const r = await fetch(src, { credentials: 'include' });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const b = await r.blob();
      return { ok: true, b64: await readB64(b), type: b.type };
    } catch (e) {
      // last resort: a same-origin <img> already on the page, drawn into a canvas
      const img = Array.from(document.images).find((i) => i.currentSrc === src || i.src === src);
      if (img && img.complete && img.naturalWidth) {
        try {
          const c = document.createElement('canvas');
          c.width = img.naturalWidth;
          c.height = img.naturalHeight;
          c.getContext('2d').drawImage(img, 0, 0);
          const b = await new Promise((res) => c.toBlob(res, 'image/png'));
          if (b) return { ok: true, b64: await readB64(b), type: 'image/png' };
        } catch { /* tainted canvas */ }
      }
      return { ok: false, error: `the image could not be read (${e && e.message || e})` };
    }
  }

  chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
    if (sender.id !== chrome.runtime.id) return false;
    if (msg.type === 'faceprov:getImage') {
      getImage(msg.src).then(sendResponse);
      return true;
    }
    if (window !== window.top) return false; // notices and panels only in the top frame
    if (msg.type === 'faceprov:panel') panel(msg);
    else if (msg.type === 'faceprov:notice') notice(msg.text, { busy: !!msg.busy, error: !!msg.error });
    sendResponse({ ok: true });
    return false;
  });
})();
