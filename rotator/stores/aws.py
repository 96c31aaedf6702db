"""The AWS Secrets Manager store: published keys as ``AWSCURRENT`` versions, rotation state beside them.

Two secrets per credential, both created by the worker (tagged ``managed-by: rotator``,
``rotator-credential: <name>``, ``rotator-role: state|published``, encrypted with ``kms_key_id`` when
one is configured):

* **State** ``<state_prefix><credential name>`` (consumers are never granted it): the JSON of
  :class:`~rotator.model.CredentialState`; its version is the ``VersionId`` carrying ``AWSCURRENT``.
  A write puts a new version under the private label ``ROTATOR_NEXT``, then moves ``AWSCURRENT`` to
  it with ``RemoveFromVersionId=<expected>``. Secrets Manager refuses that move once ``AWSCURRENT``
  has left ``expected``: that refusal is the compare-and-set (DESIGN.md I4). A version put by a loser
  keeps no label that anyone reads, and Secrets Manager deletes such versions by itself. Each write
  uses a fresh ``ClientRequestToken`` that botocore repeats on its own retries, so a retried call is
  idempotent; a token derived from (expected version, content) would be idempotent across *our*
  retries too, but then two workers writing the same bytes over the same version would both "win",
  which breaks the compare-and-set contract, so it is deliberately not done. The repeat of a move
  whose answer was lost can arrive after another writer has already built on it, so AWSCURRENT is
  then neither ours nor ``expected``: each version names the one it replaced (``rotator_replaces``,
  taken off on read), and a refused write is ours exactly when AWSCURRENT descends from it.
* **Published** ``ref.path``: the version labelled ``AWSCURRENT`` holds the verified key in the
  consumer contract's JSON. Every key lives in its own version whose ``ClientRequestToken`` is
  derived from (credential, nonce, api key, created_at), so a retried step re-puts the same version
  and changes nothing. :meth:`AwsStore.publish` moves ``AWSCURRENT`` with ``RemoveFromVersionId``
  (Secrets Manager moves ``AWSPREVIOUS`` to the retiring key by itself).

The labels ``AWSPENDING`` and ``AWSPREVIOUS`` of the published secret mirror the state, as AWS's own
rotation uses them: after each successful :meth:`AwsStore.save`, the pending key (once it exists) is
put under ``AWSPENDING``, and ``AWSPREVIOUS`` is taken off a version once its key is no longer
retiring (revoked), so no label ever points at a dead key. The mirror never touches ``AWSCURRENT``
and never writes the first version of a secret (Secrets Manager would make that one ``AWSCURRENT``),
so a consumer reading ``AWSCURRENT`` only ever sees a verified key (I1). The mirror is derived from
the state alone, so a failed mirror is only logged and the next save repairs it; the state write,
which is what the Store contract promises, has already succeeded by then.

The client is built once by :func:`make_client` through :mod:`rotator.clients.aws` (the one importer
of botocore), with botocore's standard retry mode (throttling, 5xx, connection errors) and credentials
from the standard chain, so IRSA and instance roles work without configuration. Every botocore error
is translated in :meth:`AwsStore._aws` by that module's one translator.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from rotator.clients import aws
from rotator.errors import Corrupt, StoreError, Unavailable, VersionConflict
from rotator.model import Ack, CredentialRef, CredentialState, Key, MalformedError, NewerSchema
from rotator.stores.base import (
    PUBLISHED_MEMORY,
    CheckResult,
    LeaseRecord,
    Snapshot,
    Version,
    is_credential_name,
    read_check,
    same_key,
)

if TYPE_CHECKING:
    from rotator.config import AwsStoreSettings

log = logging.getLogger("rotator.stores.aws")

CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"
#: The label of a state version put but not (yet) made current. Only this module reads it.
NEXT = "ROTATOR_NEXT"
DEFAULT_STATE_PREFIX = "rotator/state/"
#: Namespace of the deterministic ClientRequestTokens of published keys (uuid5).
_TOKEN_NS = uuid.UUID("c8c20412-d615-4e2f-835a-a21f2c89a9a6")
#: Consumers acknowledge a key with a tag ``rotator-ack:<consumer id>`` on the published secret: tags
#: are the one thing a consumer may write there without creating a version (and, by its policy,
#: only tags with this prefix). Secrets Manager allows 50 tags per secret, 3 of them ours.
ACK_TAG = "rotator-ack:"
#: Suffix of the tag beside a consumer's acknowledgement that reports a key the CLOB refused.
REFUSED_SUFFIX = ":refused"
#: The tag carrying a lease's deadline, ``"<until> <VersionId>"``: renewals write it instead of a version.
LEASE_TAG = "rotator-lease-until"
#: How often publish looks again when another worker moved AWSCURRENT between its read and its move.
_PUBLISH_TRIES = 3

_NOT_FOUND = aws.NOT_FOUND
_EXISTS = "ResourceExistsException"
#: What Secrets Manager answers when RemoveFromVersionId no longer carries the label.
_STAGE_REFUSED = frozenset({"InvalidParameterException", "InvalidRequestException"})
#: The field of a state (or lease) version that names the version it replaced: the lineage
#: :meth:`AwsStore._landed` walks. The store adds it on write and takes it off on read.
_PARENT = "rotator_replaces"
#: How far back that walk looks: further than any burst of writers between a call and its retry.
_LINEAGE_STEPS = 32


class SecretsManagerClient(Protocol):
    """The calls of boto3's ``secretsmanager`` client this store makes (keyword arguments as boto3's)."""

    def get_secret_value(self, **kwargs: Any) -> dict[str, Any]: ...

    def put_secret_value(self, **kwargs: Any) -> dict[str, Any]: ...

    def create_secret(self, **kwargs: Any) -> dict[str, Any]: ...

    def describe_secret(self, **kwargs: Any) -> dict[str, Any]: ...

    def update_secret_version_stage(self, **kwargs: Any) -> dict[str, Any]: ...

    def tag_resource(self, **kwargs: Any) -> dict[str, Any]: ...

    def list_secrets(self, **kwargs: Any) -> dict[str, Any]: ...

    def list_secret_version_ids(self, **kwargs: Any) -> dict[str, Any]: ...

    def close(self) -> None: ...


def make_client(settings: AwsStoreSettings, env: Mapping[str, str] | None = None) -> SecretsManagerClient:
    """The one Secrets Manager client of the process: standard retries, the standard credential chain,
    ``store.aws.proxy`` (its password from ``env``).

    :raises ConfigError: no region is configured or found in the environment; the proxy's password
        is missing.
    """
    client = aws.make_client(
        "secretsmanager",
        region=settings.region,
        endpoint_url=settings.endpoint_url,
        timeout=settings.timeout,
        max_attempts=settings.max_attempts,
        setting="store.aws.region",
        proxy=aws.proxy_url(settings.proxy, env or {}),
    )
    return cast(SecretsManagerClient, client)


def _dumps(data: Mapping[str, Any]) -> str:
    # Canonical, so a retried put of the same key carries byte-identical content.
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _tags(ref: CredentialRef, role: str) -> list[dict[str, str]]:
    return [
        {"Key": "managed-by", "Value": "rotator"},
        {"Key": "rotator-credential", "Value": ref.name},
        {"Key": "rotator-role", "Value": role},
    ]


def _holder(stages: Mapping[str, list[str]], label: str) -> str | None:
    """The VersionId carrying ``label``, if any (a label is on at most one version)."""
    return next((vid for vid, labels in stages.items() if label in labels), None)


def _why(exc: ValueError) -> str:
    # json's messages quote no content and ours name fields only; any other text might quote a value.
    return (
        " ".join(str(exc).split())[:200]
        if isinstance(exc, (json.JSONDecodeError, MalformedError))
        else type(exc).__name__
    )


def _epoch(value: Any) -> float:
    """A version's CreatedDate (boto3: a datetime) as unix seconds; 0 when absent."""
    stamp = getattr(value, "timestamp", None)
    return float(stamp()) if callable(stamp) else float(value or 0)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class AwsStore:
    """The :class:`~rotator.stores.base.Store` in AWS Secrets Manager (see the module docstring).

    Safe to share between threads (boto3 clients are); every call talks to Secrets Manager, nothing
    is cached, since other workers write the same secrets.
    """

    backend = "aws"

    def __init__(
        self,
        client: SecretsManagerClient,
        *,
        kms_key_id: str | None = None,
        state_prefix: str = DEFAULT_STATE_PREFIX,
    ) -> None:
        self._client = client
        self._kms_key_id = kms_key_id
        self._state_prefix = state_prefix
        self._client_error = aws.client_error()
        self._closed = False

    def __repr__(self) -> str:
        return f"AwsStore(state_prefix={self._state_prefix!r})"

    def state_secret(self, ref: CredentialRef) -> str:
        """The name of the secret holding ``ref``'s rotation state."""
        return self._state_prefix + ref.name

    @staticmethod
    def key_version(ref: CredentialRef, key: Key) -> str:
        """The VersionId (= ClientRequestToken) that ``key`` gets in the published secret."""
        return str(uuid.uuid5(_TOKEN_NS, f"key\0{ref.name}\0{key.nonce}\0{key.api_key}\0{key.created_at!r}"))

    # -- the Store protocol -----------------------------------------------------------------------

    def load(self, ref: CredentialRef) -> Snapshot:
        name = self.state_secret(ref)
        with self._aws(f"reading state secret {name!r}"):
            resp = self._get_current(name)
        if resp is None:
            return Snapshot(CredentialState(), None)
        text = resp.get("SecretString")
        if not isinstance(text, str):
            raise Corrupt(f"state secret {name!r}: AWSCURRENT holds no text value")
        try:
            data = json.loads(text)
            if isinstance(data, dict):
                data.pop(_PARENT, None)
            state = CredentialState.from_dict(data)
        except NewerSchema as exc:
            raise Corrupt(f"state secret {name!r}: {exc}") from None
        except ValueError as exc:
            raise Corrupt(f"state secret {name!r}: not a rotation state ({_why(exc)})") from None
        return Snapshot(state, str(resp["VersionId"]))

    def save(self, ref: CredentialRef, state: CredentialState, expected: Version | None) -> Version:
        name = self.state_secret(ref)
        data = state.to_dict()
        token = str(uuid.uuid4())
        with self._aws(f"writing state secret {name!r}"):
            if expected is None:
                version = self._create_state(ref, name, _dumps(data), token)
            elif not isinstance(expected, str) or not _is_uuid(expected):
                raise VersionConflict(f"state secret {name!r}: {expected!r} is not a version of it")
            else:
                version = self._update_state(name, data, token, expected)
        self._mirror(ref, state)
        return version

    def publish(self, ref: CredentialRef, key: Key) -> None:
        path = ref.path
        token = self.key_version(ref, key)
        body = _dumps(key.published())
        with self._aws(f"publishing to secret {path!r}"):
            drop_pending = False
            for _ in range(_PUBLISH_TRIES):
                stages = self._published_stages(path)
                if stages is None:
                    if self._create_published(ref, body, token):
                        return
                    continue  # another worker created it first: publish over it
                current = _holder(stages, CURRENT)
                if current == token:
                    drop_pending = _holder(stages, PENDING) == token
                    break
                if current is None:
                    # An empty secret (created by hand): nothing consumers read to compare against.
                    self._client.put_secret_value(
                        SecretId=path, ClientRequestToken=token, SecretString=body, VersionStages=[CURRENT]
                    )
                    return
                self._client.put_secret_value(
                    SecretId=path, ClientRequestToken=token, SecretString=body, VersionStages=[PENDING]
                )
                try:
                    self._client.update_secret_version_stage(
                        SecretId=path,
                        VersionStage=CURRENT,
                        MoveToVersionId=token,
                        RemoveFromVersionId=current,
                    )
                except self._client_error as exc:
                    if aws.error_code(exc) in _STAGE_REFUSED:
                        continue  # AWSCURRENT moved between our read and our move: look again
                    raise
                drop_pending = True
                break
            else:
                # Unavailable, as every store (stores/base.py, Store.publish): retry later.
                raise Unavailable(
                    f"publishing to secret {path!r}: AWSCURRENT kept moving ({_PUBLISH_TRIES} tries)"
                )
            if drop_pending:
                # Published now, so no longer pending.
                self._remove_label(path, PENDING, token)

    def read_published(self, ref: CredentialRef) -> Key | None:
        path = ref.path
        with self._aws(f"reading published secret {path!r}"):
            resp = self._get_current(path)
        if resp is None:
            return None
        text = resp.get("SecretString")
        if not isinstance(text, str):
            raise Corrupt(f"published secret {path!r}: AWSCURRENT holds no text value")
        try:
            return Key.from_dict(json.loads(text))
        except ValueError as exc:
            raise Corrupt(f"published secret {path!r}: not a published key ({_why(exc)})") from None

    def ever_published(self, ref: CredentialRef, keys: Sequence[Key]) -> set[str]:
        wanted = {k.api_key for k in keys}
        found: set[str] = set()
        if not wanted:
            return found
        path = ref.path
        with self._aws(f"reading the earlier versions of published secret {path!r}"):
            versions = self._versions(path)
            # Newest first: a lost state's keys are the last ones published.
            for vid in versions[:PUBLISHED_MEMORY]:
                try:
                    resp = self._client.get_secret_value(SecretId=path, VersionId=vid)
                except self._client_error as exc:
                    if aws.error_code(exc) == _NOT_FOUND:
                        continue  # deleted by Secrets Manager meanwhile
                    raise
                try:
                    key = Key.from_dict(json.loads(resp.get("SecretString") or ""))
                except ValueError:
                    continue  # not a key rotator wrote: it proves nothing
                if any(same_key(key, k) for k in keys):
                    found.add(key.api_key)
                    if len(found) == len(wanted):
                        break
        return found

    def _versions(self, path: str) -> list[str]:
        """VersionIds of the published secret, newest first, the unlabelled (deprecated) ones too."""
        if self._describe(path) is None:
            # Asked first: moto answers ListSecretVersionIds of a missing secret with a 500.
            return []
        out: list[tuple[Any, str]] = []
        token: str | None = None
        while True:
            more = {"NextToken": token} if token else {}
            try:
                resp = self._client.list_secret_version_ids(SecretId=path, IncludeDeprecated=True, **more)
            except self._client_error as exc:
                if aws.error_code(exc) == _NOT_FOUND:
                    return []
                raise
            out += [(v.get("CreatedDate") or 0, str(v["VersionId"])) for v in resp.get("Versions") or ()]
            token = resp.get("NextToken")
            if not token:
                break
        return [vid for _, vid in sorted(out, key=lambda v: _epoch(v[0]), reverse=True)]

    def ack(self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float) -> None:
        path = ref.path
        # Tag values allow letters, digits, spaces and _.:/=+-@ only: "<at> <key prefix>", no JSON.
        tag = {"Key": ACK_TAG + consumer_id, "Value": f"{at!r} {key_prefix}"}
        with self._aws(f"acknowledging on secret {path!r}"):
            self._client.tag_resource(SecretId=path, Tags=[tag])

    def report_refusal(
        self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float, refused_at: float, count: int
    ) -> None:
        path = ref.path
        # Two tags in one call: the acknowledgement as ack() writes it (so workers that predate reports
        # read it unchanged) and "rotator-ack:<id>:refused" = "<refused_at> <count> <key prefix>". A
        # consumer id has no ':', so older workers skip that tag; the consumer policy's "rotator-ack:*"
        # allows it.
        tags = [
            {"Key": ACK_TAG + consumer_id, "Value": f"{at!r} {key_prefix}"},
            {
                "Key": ACK_TAG + consumer_id + REFUSED_SUFFIX,
                "Value": f"{refused_at!r} {count:d} {key_prefix}",
            },
        ]
        with self._aws(f"reporting a refused key on secret {path!r}"):
            self._client.tag_resource(SecretId=path, Tags=tags)

    def acks(self, ref: CredentialRef) -> list[Ack]:
        path = ref.path
        with self._aws(f"reading acknowledgements on secret {path!r}"):
            desc = self._describe(path)
        if desc is None:
            return []
        out: list[Ack] = []
        refused: dict[str, str] = {}
        for tag in desc.get("Tags") or []:
            key, text = str(tag.get("Key", "")), str(tag.get("Value", ""))
            if key.startswith(ACK_TAG) and key.endswith(REFUSED_SUFFIX):
                refused[key[len(ACK_TAG) : -len(REFUSED_SUFFIX)]] = text
        for tag in desc.get("Tags") or []:
            key, text = str(tag.get("Key", "")), str(tag.get("Value", ""))
            if not key.startswith(ACK_TAG) or key.endswith(REFUSED_SUFFIX):
                continue
            at, _, prefix = text.partition(" ")
            consumer = key[len(ACK_TAG) :]
            try:
                raw: dict[str, object] = {"consumer_id": consumer, "key_prefix": prefix, "at": float(at)}
                raw.update(_refusal(refused.get(consumer), prefix))
                out.append(Ack.from_dict(raw))
            except ValueError:
                continue  # written by a consumer: garbage must not stop revocations
        return out

    def names(self) -> list[str]:
        prefix = self._state_prefix
        found: set[str] = set()
        # The "name" filter is a case-insensitive prefix match on AWS: the exact prefix is checked
        # below. Secrets scheduled for deletion are not listed (IncludePlannedDeletion defaults off).
        request: dict[str, Any] = {"Filters": [{"Key": "name", "Values": [prefix]}], "MaxResults": 100}
        with self._aws(f"listing state secrets {prefix}*"):
            while True:
                resp = self._client.list_secrets(**request)
                for entry in resp.get("SecretList") or []:
                    name = str(entry.get("Name", ""))
                    if name.startswith(prefix) and is_credential_name(name[len(prefix) :]):
                        found.add(name[len(prefix) :])
                token = resp.get("NextToken")
                if not token:
                    break
                request["NextToken"] = token
        return sorted(found)

    # -- lease records ----------------------------------------------------------------------------
    #
    # Secrets Manager keeps every version younger than 24 h, and AWS warns that a PutSecretValue more
    # often than every 10 minutes exhausts the version quota. So only a change of holder (a takeover)
    # puts a version, made AWSCURRENT with RemoveFromVersionId (the compare-and-set, as for states).
    # A renewal or a release by the holder checks that AWSCURRENT is still its version and writes the
    # deadline into a tag naming that version; readers trust the tag only when it names AWSCURRENT.
    # A taker checks the tag again just before its move. That leaves a small race: a holder may check,
    # lose AWSCURRENT to a taker, then tag (its tag names the old version and is ignored), and believe
    # itself leader until its next renewal fails; or a taker that saw a lapsed lease may move
    # AWSCURRENT in the milliseconds after the holder's late renewal. For at most one renewal
    # interval two workers may then both start passes. That is harmless: I4 is held by the
    # per-credential pending lease and the state's compare-and-set, not by the leader lease, which
    # only keeps the fleet's CLOB spend at one worker's.

    def load_lease(self, name: str) -> LeaseRecord | None:
        secret = self._state_prefix + name
        with self._aws(f"reading lease secret {secret!r}"):
            desc = self._describe(secret)
            resp = self._get_current(secret) if desc is not None else None
        if desc is None or resp is None:
            return None
        version = str(resp["VersionId"])
        try:
            body = json.loads(str(resp.get("SecretString")))
            holder, until = str(body["holder"]), float(body["until"])
        except (KeyError, TypeError, ValueError):
            raise Corrupt(f"lease secret {secret!r}: AWSCURRENT is not a lease record") from None
        tagged = _lease_tag(desc, version)
        return LeaseRecord(holder, until if tagged is None else tagged, version)

    def save_lease(self, name: str, holder: str, until: float, expected: LeaseRecord | None) -> LeaseRecord:
        secret = self._state_prefix + name
        lease = {"holder": holder, "until": until}
        token = str(uuid.uuid4())
        with self._aws(f"writing lease secret {secret!r}"):
            if expected is None:
                try:
                    self._client.create_secret(
                        Name=secret,
                        SecretString=_dumps(lease),
                        ClientRequestToken=token,
                        Description="rotator: which daemon replica is active (no secret in it)",
                        Tags=[
                            {"Key": "managed-by", "Value": "rotator"},
                            {"Key": "rotator-role", "Value": "lease"},
                            {"Key": LEASE_TAG, "Value": f"{until!r} {token}"},
                        ],
                        **self._kms(),
                    )
                except self._client_error as exc:
                    if aws.error_code(exc) == _EXISTS:
                        raise VersionConflict(f"lease secret {secret!r}: created by another writer") from None
                    raise
                return LeaseRecord(holder, until, token)
            version = str(expected.version)
            if expected.holder == holder:
                # Renewal or release: no new version, only the tag (see above).
                current = self._current_version(secret)
                if current != version:
                    raise VersionConflict(f"lease secret {secret!r}: taken over by another writer")
            else:
                # Takeover: refuse if the holder renewed since ``expected`` was read (its renewal
                # moved the tag, not the version), which narrows the race to this call and the move.
                desc = self._client.describe_secret(SecretId=secret)
                current = _holder(
                    {str(k): list(v) for k, v in (desc.get("VersionIdsToStages") or {}).items()}, CURRENT
                )
                tagged = _lease_tag(desc, version)
                if current != version or (tagged is not None and tagged != expected.until):
                    raise VersionConflict(f"lease secret {secret!r}: renewed or taken over meanwhile")
                # The same compare-and-set as a state's: a new version, made AWSCURRENT only if it
                # still is ``version``.
                self._update_state(secret, lease, token, version)
                version = token
            # managed-by rides along: the worker's IAM policy allows TagResource only with it.
            self._client.tag_resource(
                SecretId=secret,
                Tags=[
                    {"Key": "managed-by", "Value": "rotator"},
                    {"Key": LEASE_TAG, "Value": f"{until!r} {version}"},
                ],
            )
        return LeaseRecord(holder, until, version)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

    # -- state ------------------------------------------------------------------------------------

    def _create_state(self, ref: CredentialRef, name: str, body: str, token: str) -> str:
        try:
            self._client.create_secret(
                Name=name,
                SecretString=body,
                ClientRequestToken=token,
                Description=f"rotator: rotation state of credential {ref.name} (not for consumers)",
                Tags=_tags(ref, "state"),
                **self._kms(),
            )
        except self._client_error as exc:
            if aws.error_code(exc) != _EXISTS:
                raise
            if self._landed(name, token, None, self._current_version(name)):
                return token  # our own create, retried by botocore after its answer was lost
            raise VersionConflict(
                f"state secret {name!r}: already exists (another writer got there first)"
            ) from None
        return token

    def _update_state(self, name: str, data: Mapping[str, Any], token: str, expected: str) -> str:
        body = _dumps({**data, _PARENT: expected})
        try:
            self._client.put_secret_value(
                SecretId=name, ClientRequestToken=token, SecretString=body, VersionStages=[NEXT]
            )
        except self._client_error as exc:
            if aws.error_code(exc) == _NOT_FOUND:
                raise VersionConflict(
                    f"state secret {name!r}: does not exist, expected version {expected}"
                ) from None
            raise
        try:
            self._client.update_secret_version_stage(
                SecretId=name, VersionStage=CURRENT, MoveToVersionId=token, RemoveFromVersionId=expected
            )
        except self._client_error as exc:
            if aws.error_code(exc) not in _STAGE_REFUSED:
                raise
            current = self._current_version(name)
            if current != expected:
                if self._landed(name, token, expected, current):
                    return token  # our own move, retried by botocore after its answer was lost
                raise VersionConflict(
                    f"state secret {name!r}: AWSCURRENT is no longer version {expected} "
                    "(another writer got there first)"
                ) from None
            raise
        return token

    def _landed(self, name: str, token: str, expected: str | None, current: str | None) -> bool:
        """Whether our write ``token`` became AWSCURRENT of ``name``, though it may no longer be.

        A refusal of a retried call is ambiguous: botocore repeats a call whose answer was lost, and by
        the time the repeat arrives another writer may have built on our version, so AWSCURRENT is
        neither ours nor ``expected``. Each state version names the version it replaced
        (:data:`_PARENT`), so the chain from AWSCURRENT back to ``expected`` passes through ``token``
        exactly when our write landed. Unknown or unreadable links end the walk with "not ours":
        the conflict the caller retries, never a write claimed that did not happen.
        """
        version = current
        for _ in range(_LINEAGE_STEPS):
            if version is None or version == expected:
                return False
            if version == token:
                return True
            version = self._parent(name, version)
        return False

    def _parent(self, name: str, version: str) -> str | None:
        try:
            resp = self._client.get_secret_value(SecretId=name, VersionId=version)
        except self._client_error as exc:
            if aws.error_code(exc) == _NOT_FOUND:
                return None  # Secrets Manager deleted the unlabelled version
            raise
        try:
            parent = json.loads(str(resp.get("SecretString"))).get(_PARENT)
        except (ValueError, AttributeError):
            return None
        return parent if isinstance(parent, str) else None

    def _current_version(self, name: str) -> str | None:
        resp = self._get_current(name)
        return None if resp is None else str(resp["VersionId"])

    def _get_current(self, secret: str) -> dict[str, Any] | None:
        """GetSecretValue of ``secret``'s AWSCURRENT version; None when the secret does not exist."""
        try:
            return self._client.get_secret_value(SecretId=secret, VersionStage=CURRENT)
        except self._client_error as exc:
            if aws.error_code(exc) == _NOT_FOUND:
                return None
            raise

    def _describe(self, secret: str) -> dict[str, Any] | None:
        """DescribeSecret of ``secret``; None when it does not exist."""
        try:
            return self._client.describe_secret(SecretId=secret)
        except self._client_error as exc:
            if aws.error_code(exc) == _NOT_FOUND:
                return None
            raise

    # -- published --------------------------------------------------------------------------------

    def _published_stages(self, path: str) -> dict[str, list[str]] | None:
        """VersionId -> labels of the published secret; None when it does not exist."""
        desc = self._describe(path)
        if desc is None:
            return None
        if desc.get("DeletedDate"):
            # Secrets Manager itself refuses most writes then; saying so here is clearer and also
            # holds for servers that do not (moto accepts writes to a deleted secret).
            raise StoreError(f"secret {path!r} {aws.DELETED}")
        raw = desc.get("VersionIdsToStages") or {}
        return {str(vid): list(labels) for vid, labels in raw.items()}

    def _create_published(self, ref: CredentialRef, body: str, token: str) -> bool:
        """Create the published secret with ``body`` as its first (AWSCURRENT) version. False: it exists."""
        try:
            self._client.create_secret(
                Name=ref.path,
                SecretString=body,
                ClientRequestToken=token,
                Description=f"rotator: CLOB API key of credential {ref.name}; read the AWSCURRENT version",
                Tags=_tags(ref, "published"),
                **self._kms(),
            )
        except self._client_error as exc:
            if aws.error_code(exc) == _EXISTS:
                return False
            raise
        return True

    def _remove_label(self, path: str, label: str, version: str) -> None:
        try:
            self._client.update_secret_version_stage(
                SecretId=path, VersionStage=label, RemoveFromVersionId=version
            )
        except self._client_error as exc:
            if aws.error_code(exc) not in _STAGE_REFUSED:  # already gone: someone else tidied it
                raise

    def _mirror(self, ref: CredentialRef, state: CredentialState) -> None:
        """Point AWSPENDING/AWSPREVIOUS of the published secret at what ``state`` says. Best effort."""
        if not ref.path:
            return  # a credential removed from the config: where it published is no longer known
        try:
            with self._aws(f"labelling published secret {ref.path!r}"):
                self._sync_labels(ref, state)
        except StoreError as exc:
            log.warning("%s: AWSPENDING/AWSPREVIOUS not updated (%s); the next save retries", ref.name, exc)

    def _sync_labels(self, ref: CredentialRef, state: CredentialState) -> None:
        path = ref.path
        try:
            stages = self._published_stages(path)
        except StoreError:
            return  # scheduled for deletion: publish reports that, loudly
        current = _holder(stages, CURRENT) if stages else None
        if stages is None or current is None:
            return  # a first version would become AWSCURRENT whatever label it is given
        pending: Key | None = state.pending.key if state.pending else None
        if pending is None and state.current is not None and state.published_nonce != state.current.nonce:
            pending = state.current  # promoted, about to be published: still AWSPENDING until then
        want = self.key_version(ref, pending) if pending is not None else None
        holder = _holder(stages, PENDING)
        if want is not None and want != current:
            if holder != want:
                if want in stages:
                    move: dict[str, str] = {"RemoveFromVersionId": holder} if holder else {}
                    self._client.update_secret_version_stage(
                        SecretId=path, VersionStage=PENDING, MoveToVersionId=want, **move
                    )
                else:
                    assert pending is not None
                    self._client.put_secret_value(
                        SecretId=path,
                        ClientRequestToken=want,
                        SecretString=_dumps(pending.published()),
                        VersionStages=[PENDING],
                    )
        elif holder is not None and holder != current:
            self._remove_label(path, PENDING, holder)
        previous = _holder(stages, PREVIOUS)
        if previous is not None and previous not in {self.key_version(ref, r.key) for r in state.retiring}:
            # Its key was revoked (or is none of ours): no label may point consumers at a dead key.
            self._remove_label(path, PREVIOUS, previous)

    # -- errors -----------------------------------------------------------------------------------

    def _kms(self) -> dict[str, str]:
        return {"KmsKeyId": self._kms_key_id} if self._kms_key_id else {}

    @contextlib.contextmanager
    def _aws(self, doing: str) -> Iterator[None]:
        """Translate botocore's exceptions into the store's (errors.py); ours pass through."""
        try:
            yield
        except aws.errors() as exc:
            raise aws.store_error(exc, doing) from exc

    # -- check ------------------------------------------------------------------------------------

    def check(self, ref: CredentialRef) -> CheckResult:
        # Secrets Manager has no dry run, and asking IAM (SimulatePrincipalPolicy) needs rights the
        # worker does not have: reads and the listing are tested, writes stay unknown.
        failed = read_check(self, ref)
        if failed is not None:
            return failed
        return CheckResult(
            "unknown",
            f"state secret {self.state_secret(ref)!r} and secret {ref.path!r} readable, listing allowed; "
            "write permissions cannot be tested without writing",
        )


def _lease_tag(desc: Mapping[str, Any], version: str) -> float | None:
    """The deadline in the lease tag of a DescribeSecret answer, if the tag names ``version``."""
    for tag in desc.get("Tags") or []:
        if tag.get("Key") == LEASE_TAG:
            text, _, tagged = str(tag.get("Value", "")).partition(" ")
            if tagged == version:
                with contextlib.suppress(ValueError):
                    return float(text)
    return None


def _refusal(text: str | None, prefix: str) -> dict[str, object]:
    """The refusal fields of a consumer's ``:refused`` tag, if it names the key its acknowledgement
    names (a report about an older key is over: the consumer has acknowledged another since)."""
    if text is None:
        return {}
    parts = text.split(" ")
    if len(parts) != 3 or parts[2] != prefix:
        return {}
    try:
        return {"refused_at": float(parts[0]), "refusals": int(parts[1])}
    except ValueError:
        return {}
