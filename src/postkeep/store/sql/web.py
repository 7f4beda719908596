"""Web sessions and the login history (`postkeep.web`) in the SQL store.

Part of `postkeep.store.sql.store.SqlStore`. A session is found by the SHA-256 of its token
(the caller hashes; the token itself is never stored); one that expired or was idle too long
is removed when it is looked up, and an account's expired sessions and those past its limit
(oldest first) go when it makes a new one, so the table stays bounded by accounts times the
limit. Every statement that reads or ends sessions by id names the account too: a session id
of another account finds nothing. The login history is bounded in time (`forget_before`) per
account at each insert; its writes and a session's last-seen time are not durable (a crash
may lose the last ones, never a login).
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select, update

from postkeep.store.api import LoginRecord, WebSession
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.schema import login_history, web_sessions

_S = web_sessions.c
_SESSION_COLS = (_S.id, _S.account_id, _S.stage, _S.created, _S.last_seen, _S.expires, _S.ip,
                 _S.user_agent)
_H = login_history.c
_LOGIN_COLS = (_H.account_id, _H.time, _H.ip, _H.method, _H.result, _H.detail)


class WebMixin(SqlStoreBase):
    """Web session and login history methods of `SqlStore` (see the module docstring)."""

    async def add_web_session(self, token_hash: str, account_id: int, stage: str, now: float,
                              expires: float, ip: str, user_agent: str,
                              keep: int) -> WebSession:
        user_agent = user_agent[:255]

        def fn(conn: Connection) -> WebSession:
            conn.execute(delete(web_sessions).where(_S.account_id == account_id,
                                                    _S.expires <= now))
            ids = conn.execute(select(_S.id).where(_S.account_id == account_id)
                               .order_by(_S.last_seen.desc(), _S.id.desc())).scalars().all()
            if len(ids) >= keep:
                conn.execute(delete(web_sessions).where(_S.id.in_(ids[keep - 1:])))
            new_id = conn.execute(insert(web_sessions).values(
                token_hash=token_hash, account_id=account_id, stage=stage, created=now,
                last_seen=now, expires=expires, ip=ip[:64], user_agent=user_agent,
            ).returning(_S.id)).scalar_one()
            return WebSession(int(new_id), account_id, stage, now, now, expires, ip[:64],
                              user_agent)

        return await self._write(fn)

    async def get_web_session(self, token_hash: str, now: float,
                              idle_before: float) -> WebSession | None:
        q = select(*_SESSION_COLS).where(_S.token_hash == token_hash)
        row = await self._read(lambda conn: conn.execute(q).first())
        if row is None:
            return None
        session = WebSession(*row)
        if session.expires <= now or session.last_seen < idle_before:
            await self._write(lambda conn: conn.execute(
                delete(web_sessions).where(_S.id == session.id)))
            return None
        return session

    async def touch_web_session(self, session_id: int, now: float) -> None:
        await self._write(lambda conn: conn.execute(
            update(web_sessions).where(_S.id == session_id).values(last_seen=now)),
            durable=False)

    async def advance_web_session(self, session_id: int, token_hash: str, stage: str,
                                  now: float) -> None:
        await self._write(lambda conn: conn.execute(
            update(web_sessions).where(_S.id == session_id)
            .values(token_hash=token_hash, stage=stage, last_seen=now)))

    async def list_web_sessions(self, account_id: int, now: float) -> list[WebSession]:
        q = (select(*_SESSION_COLS).where(_S.account_id == account_id, _S.expires > now)
             .order_by(_S.created.desc(), _S.id.desc()))
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [WebSession(*row) for row in rows]

    async def remove_web_session(self, account_id: int, session_id: int) -> bool:
        def fn(conn: Connection) -> bool:
            q = (delete(web_sessions).where(_S.id == session_id, _S.account_id == account_id)
                 .returning(_S.id))
            return conn.execute(q).first() is not None

        return await self._write(fn)

    async def remove_web_sessions(self, account_id: int, keep_id: int = 0) -> int:
        def fn(conn: Connection) -> int:
            q = (delete(web_sessions).where(_S.account_id == account_id, _S.id != keep_id)
                 .returning(_S.id))
            return len(conn.execute(q).all())

        return await self._write(fn)

    async def add_login(self, record: LoginRecord, forget_before: float) -> None:
        def fn(conn: Connection) -> None:
            conn.execute(insert(login_history).values(
                account_id=record.account_id, time=record.time, ip=record.ip[:64],
                method=record.method[:64], result=record.result[:32],
                detail=record.detail[:255]))
            conn.execute(delete(login_history).where(_H.account_id == record.account_id,
                                                     _H.time < forget_before))

        await self._write(fn, durable=False)

    async def list_logins(self, account_id: int, limit: int) -> list[LoginRecord]:
        q = (select(*_LOGIN_COLS).where(_H.account_id == account_id)
             .order_by(_H.time.desc(), _H.id.desc()).limit(limit))
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [LoginRecord(*row) for row in rows]
