"""Accounts and API keys (only a key's hash is stored)."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from .db import InvalidInput, NotFound, PermissionDenied
from .models import (
    ROLES,
    Account,
    ApiKey,
    utcnow,
)
from .validation import SYSTEM_ACTOR, _iso, check_text, check_time


class AccountsMixin:
    """Repo's accounts and keys; needs Repo's transactions (`write`, `read`) and `_audit`."""

    async def _account(self, s: AsyncSession, who: str) -> Account:
        if not isinstance(who, str) or not who or len(who) > 128:
            raise InvalidInput("account must be a name or id")
        acc = (await s.execute(select(Account).where(or_(Account.id == who, Account.name == who)))
               ).scalars().first()
        if acc is None:
            raise NotFound(f"unknown account {who[:80]!r}")
        return acc

    async def create_account(self, name: str, role: str = "user", actor: str = SYSTEM_ACTOR) -> dict:
        check_text(name, "account name", 128)
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        async with self.write() as s:
            if (await s.execute(select(Account.id).where(Account.name == name))).first():
                raise InvalidInput(f"account {name!r} exists")
            acc = Account(name=name, role=role)
            s.add(acc)
            await s.flush()
            await self._audit(s, actor, "account.create", "account", acc.id,
                              {"name": name, "role": role})
            return {"id": acc.id, "name": acc.name, "role": acc.role}

    async def get_or_create_account(self, name: str, role: str = "user") -> dict:
        async with self.read() as s:
            acc = (await s.execute(select(Account).where(Account.name == name))).scalars().first()
            if acc is not None:
                return {"id": acc.id, "name": acc.name, "role": acc.role}
        try:
            return await self.create_account(name, role)
        except InvalidInput:
            async with self.read() as s:
                acc = await self._account(s, name)
                return {"id": acc.id, "name": acc.name, "role": acc.role}

    async def create_api_key(self, account: str, label: str | None = None,
                             expires_at: dt.datetime | None = None,
                             actor: str = SYSTEM_ACTOR) -> str:
        """Returns the key (shown once): 'fpk_<prefix>_<secret>'; only its sha256 is stored."""
        check_text(label, "label", 128, optional=True)
        prefix = secrets.token_hex(6)
        key = f"fpk_{prefix}_{secrets.token_urlsafe(32)}"
        async with self.write() as s:
            acc = await self._account(s, account)
            s.add(ApiKey(account_id=acc.id, prefix=prefix, label=label,
                         key_hash=hashlib.sha256(key.encode()).hexdigest(),
                         expires_at=check_time(expires_at, "expires_at")))
            # key_hash (already stored beside the key: nothing secret) lets verify-chain catch a
            # key row whose hash was swapped for another key's
            await self._audit(s, actor, "apikey.create", "account", acc.id,
                              {"prefix": prefix, "label": label, "expires_at": _iso(expires_at),
                               "key_hash": hashlib.sha256(key.encode()).hexdigest()})
        return key

    async def authenticate(self, key: str) -> dict:
        m = re.match(r"^fpk_([0-9a-f]{12})_[A-Za-z0-9_-]{20,100}$", key or "")
        if not m:
            raise PermissionDenied("malformed API key")
        async with self.read() as s:
            row = (await s.execute(select(ApiKey, Account).join(Account)
                                   .where(ApiKey.prefix == m.group(1)))).first()
        if row is None:
            raise PermissionDenied("unknown API key")
        k, acc = row
        if not hmac.compare_digest(k.key_hash, hashlib.sha256(key.encode()).hexdigest()):
            raise PermissionDenied("unknown API key")
        if k.revoked_at is not None:
            raise PermissionDenied("API key revoked")
        if k.expires_at is not None:
            exp = k.expires_at if k.expires_at.tzinfo else k.expires_at.replace(tzinfo=dt.timezone.utc)
            if exp <= utcnow():
                raise PermissionDenied("API key expired")
        if acc.disabled:
            raise PermissionDenied("account disabled")
        return {"id": acc.id, "name": acc.name, "role": acc.role}

    async def revoke_api_key(self, prefix: str, actor: str = SYSTEM_ACTOR) -> None:
        async with self.write() as s:
            k = (await s.execute(select(ApiKey).where(ApiKey.prefix == str(prefix)))).scalars().first()
            if k is None:
                raise NotFound(f"unknown API key prefix {str(prefix)[:40]!r}")
            k.revoked_at = utcnow()
            await self._audit(s, actor, "apikey.revoke", "account", k.account_id,
                              {"prefix": k.prefix})
