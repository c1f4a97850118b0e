"""C2PA manifests on cloaked outputs (c2pa-python).

`sign_file(src, dst, ...)` embeds a manifest saying: produced by faceprov, action
`c2pa.edited` with the cloak model name/version/strength, plus an `org.faceprov.cloak`
assertion (record id, model). Key and certificate chain come from configuration
(FACEPROV_C2PA_CERT: PEM chain, leaf first; FACEPROV_C2PA_KEY: PKCS#8 PEM); tests make a
throw-away CA + leaf with `make_test_credentials`.

What c2pa-python 0.38 needs (checked offline): ES256 with a P-256 end-entity certificate,
CA:FALSE, digitalSignature, EKU emailProtection, with SKI/AKI, issued by a CA (a self-signed
leaf is refused); no timestamp authority is needed (ta_url=None); the builder needs
intent EDIT. Thumbnails are turned off (they add up to ~400 KB per photo).

`read(path)` returns the validation state ("Valid", "Trusted" when the CA is a configured
trust anchor, "Invalid" on tampering) and the faceprov assertion. Re-encoding a photo drops
the manifest — PDQ still finds the record then.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import faceprov

CLOAK_ASSERTION = "org.faceprov.cloak"
_FORMATS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
            ".webp": "image/webp", ".tif": "image/tiff", ".tiff": "image/tiff",
            ".heic": "image/heic", ".heif": "image/heif", ".avif": "image/avif"}


class C2PAError(RuntimeError):
    pass


@dataclass
class Credentials:
    cert_chain_pem: bytes  # leaf first, then intermediates/CA
    key_pem: bytes  # PKCS#8

    @classmethod
    def from_files(cls, cert: str | Path, key: str | Path) -> "Credentials":
        return cls(Path(cert).read_bytes(), Path(key).read_bytes())

    @classmethod
    def from_settings(cls) -> "Credentials":
        from faceprov.config import settings

        s = settings()
        if s.c2pa_cert is None or s.c2pa_key is None:
            raise C2PAError("no C2PA signing credentials: set FACEPROV_C2PA_CERT (PEM chain, "
                            "leaf first) and FACEPROV_C2PA_KEY (PKCS#8 PEM key)")
        return cls.from_files(s.c2pa_cert, s.c2pa_key)


def media_type(path: str | Path) -> str:
    ext = Path(path).suffix.lower()
    mt = _FORMATS.get(ext) or mimetypes.guess_type(str(path))[0]
    if mt is None:
        raise C2PAError(f"cannot tell the image format of {path}")
    return mt


def make_test_credentials(out_dir: str | Path, name: str = "faceprov test", days: int = 30) -> dict[str, Path]:
    """A local CA and a P-256 signing leaf the C2PA SDK accepts (`faceprov keys c2pa-init` makes
    one for a new user, valid `days`; tests make throw-away ones). The key file is 0600.
    A local CA is not a public trust anchor: readers elsewhere see the manifest as "Valid"
    (intact, signed) and "Trusted" only where ca.pem is configured as a trust anchor."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "faceprov")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} signer"),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, "faceprov")])
    leaf = (x509.CertificateBuilder().subject_name(leaf_name).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = {"cert": out / "signer-chain.pem", "key": out / "signer.key", "ca": out / "ca.pem"}
    paths["cert"].write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    import os

    fd = os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(paths["key"], 0o600)
    paths["ca"].write_bytes(ca.public_bytes(pem))
    return paths


def local_credentials_dir(s=None) -> Path:
    """FACEPROV_HOME/c2pa: where `faceprov keys c2pa-init` (and the CLI's first signed cloak)
    keep the local CA and signer, picked up by faceprov.config.settings()."""
    from ..config import settings

    return (s or settings()).home / "c2pa"


def make_local_credentials(name: str = "faceprov local", days: int = 825) -> dict[str, Path]:
    """Make (or replace) the local CA + signer under FACEPROV_HOME/c2pa/ (folder 0700, key 0600)."""
    from ..config import reset_settings, settings

    out = settings().ensure_home() / "c2pa"
    out.mkdir(mode=0o700, exist_ok=True)
    paths = make_test_credentials(out, name=name, days=days)
    reset_settings()
    return paths


def ensure_local_credentials() -> Path | None:
    """Signing by default: when no credentials are configured (FACEPROV_C2PA_CERT/KEY or the
    local ones), make the local ones and return their folder; None when there already are some."""
    from ..config import settings

    s = settings()
    if s.c2pa_cert is not None and s.c2pa_key is not None:
        return None
    if s.c2pa_cert is not None or s.c2pa_key is not None:
        raise C2PAError("FACEPROV_C2PA_CERT and FACEPROV_C2PA_KEY go together: one of them is not set")
    make_local_credentials()
    return local_credentials_dir()


def _context(trust_anchors_pem: bytes | None = None):
    import c2pa

    cfg: dict[str, Any] = {"builder": {"thumbnail": {"enabled": False}}}
    if trust_anchors_pem:
        cfg["trust"] = {"trust_anchors": trust_anchors_pem.decode()}
    return c2pa.Context.from_dict(cfg)


def manifest_definition(model_name: str, model_version: str, strength: float | None = None,
                        record_id: str | None = None, title: str | None = None,
                        extra: Mapping[str, Any] | None = None) -> dict:
    agent = {"name": "faceprov", "version": faceprov.__version__}
    params: dict[str, Any] = {"description": "faces cloaked against recognition",
                              "model": model_name, "model_version": model_version}
    if strength is not None:
        params["strength"] = float(strength)
    data: dict[str, Any] = {"model": {"name": model_name, "version": model_version}}
    if strength is not None:
        data["model"]["strength"] = float(strength)
    if record_id is not None:
        data["record_id"] = record_id
    if extra:
        data.update(dict(extra))
    d = {
        "claim_generator_info": [agent],
        "assertions": [
            {"label": "c2pa.actions",
             "data": {"actions": [{"action": "c2pa.edited", "softwareAgent": agent,
                                   "parameters": params}]}},
            {"label": CLOAK_ASSERTION, "data": data},
        ],
    }
    if title:
        d["title"] = title
    return d


def sign_bytes(data: bytes, fmt: str, creds: Credentials, manifest: Mapping[str, Any]) -> tuple[bytes, str]:
    """Sign image bytes; returns (signed bytes, manifest label)."""
    import c2pa

    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, creds.cert_chain_pem,
                               creds.key_pem, None)
    try:
        signer = c2pa.Signer.from_info(info)
        ctx = _context()
        builder = c2pa.Builder(json.dumps(manifest), context=ctx)
        builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
        src, dst = io.BytesIO(data), io.BytesIO()
        builder.sign(signer, fmt, src, dst)
    except c2pa.C2paError as e:
        raise C2PAError(f"C2PA signing failed: {e}") from e
    signed = dst.getvalue()
    info = read_bytes(signed, fmt)
    return signed, info["active_manifest"]


def sign_file(src: str | Path, dst: str | Path, *, model_name: str, model_version: str,
              strength: float | None = None, record_id: str | None = None,
              creds: Credentials | None = None, extra: Mapping[str, Any] | None = None) -> str:
    """Sign src into dst (may be the same path); returns the manifest label."""
    creds = creds or Credentials.from_settings()
    fmt = media_type(src)
    man = manifest_definition(model_name, model_version, strength, record_id,
                              title=Path(dst).name, extra=extra)
    signed, label = sign_bytes(Path(src).read_bytes(), fmt, creds, man)
    tmp = Path(dst).with_name(Path(dst).name + ".c2pa-tmp")
    tmp.write_bytes(signed)
    tmp.replace(dst)
    return label


def read_bytes(data: bytes, fmt: str, trust_anchors_pem: bytes | None = None) -> dict:
    """{"state": None|"Valid"|"Trusted"|"Invalid", "active_manifest", "faceprov", ...}."""
    import c2pa

    try:
        reader = c2pa.Reader(fmt, io.BytesIO(data), context=_context(trust_anchors_pem))
    except c2pa.C2paError.ManifestNotFound:
        return {"state": None, "active_manifest": None, "faceprov": None,
                "message": "no C2PA manifest (stripped or never signed)"}
    except c2pa.C2paError as e:
        return {"state": "Invalid", "active_manifest": None, "faceprov": None,
                "message": str(e)}
    with reader:
        store = json.loads(reader.json())
        state = reader.get_validation_state()
    label = store.get("active_manifest")
    man = (store.get("manifests") or {}).get(label) or {}
    fp = None
    actions = []
    for a in man.get("assertions") or []:
        if a.get("label") == CLOAK_ASSERTION:
            fp = a.get("data")
        if str(a.get("label", "")).startswith("c2pa.actions"):
            actions += [x.get("action") for x in (a.get("data") or {}).get("actions", [])]
    gen = man.get("claim_generator_info") or []
    codes = [s.get("code") for s in store.get("validation_status") or []]
    results = store.get("validation_results") or {}
    fail = (results.get("activeManifest") or {}).get("failure") or []
    codes += [f.get("code") for f in fail]
    return {"state": state, "active_manifest": label, "faceprov": fp, "actions": actions,
            "claim_generator": gen[0].get("name") if gen else man.get("claim_generator"),
            "signer": (man.get("signature_info") or {}).get("issuer"),
            "failures": list(dict.fromkeys(c for c in codes if c))}


def read(path: str | Path, trust_anchors: str | Path | None = None) -> dict:
    if trust_anchors is None:
        from faceprov.config import settings

        trust_anchors = settings().c2pa_trust_anchors
    pem = Path(trust_anchors).read_bytes() if trust_anchors else None
    return read_bytes(Path(path).read_bytes(), media_type(path), pem)
