"""An index's towers: which encoder embeds each role's vectors, one vector space per role.

A plain model (``builtin``, ``openclip:ViT-B-32/openai``) is one encoder in every role it can fill, so
every space is that encoder's space, as always. A composite names an encoder per role::

    image=openclip:MobileCLIP2-S2/dfndr2b,audio=clap:laion/clap-htsat-unfused

Roles:

- ``image``: pictures and video frames, and the query parts compared with them.
- ``text``: notes, and every text-derived vector (captions, file-name words, text read in pictures,
  what is said in recordings).
- ``audio``: the sound of recordings (windows of it), and the query parts compared with them.
- ``sound``: sound-to-sound similarity (which recording *is* this one, re-encoded or trimmed).

A role left out of a composite falls to the encoder of another that can fill it (``text`` to the
image encoder's text tower, then the audio one's; ``sound`` to the audio encoder).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmsearch.encoders.base import AUDIO, IMAGE, TEXT, Encoder
from mmsearch.errors import ModelError, ModelMismatchError

ROLES = (IMAGE, TEXT, AUDIO, "sound")
SOUND = "sound"
# Named composites (``mmsearch models`` lists them): a tower per modality.
# ``auto`` is the default of a new index when its weights can be had (README "Models": MobileCLIP2-S0 beats
# ViT-B-32 on ImageNet zero-shot, 71.5 % vs 66.6 %, at 0.54x its image multiply-adds and 0.93x its speed here).
COMPOSITES: dict[str, str] = {
    "auto": "image=openclip:MobileCLIP2-S0/dfndr2b,audio=clap:laion/clap-htsat-unfused",
    "auto-large": "image=openclip:MobileCLIP2-S2/dfndr2b,audio=clap:laion/clap-htsat-unfused",
}


@dataclass
class Towers:
    """The encoders of an index, by role.

    Attributes:
        name: The model spec an index records (``builtin``, or the composite's).
        roles: Role -> encoder, for every role some encoder fills.
        composite: Named per role (else one model, whose fingerprint the index keeps).
    """

    name: str
    roles: dict[str, Encoder] = field(default_factory=dict)
    composite: bool = False

    def get(self, role: str) -> Encoder | None:
        return self.roles.get(role)

    def need(self, role: str) -> Encoder:
        enc = self.roles.get(role)
        if enc is None:
            raise ModelError(f"model {self.name} has no {role} tower")
        return enc

    @property
    def fingerprint(self) -> str:
        """A plain model's own fingerprint (what indexes always recorded); a composite's hashes its towers'."""
        if not self.composite:
            return self.primary.fingerprint
        key = ",".join(f"{r}={e.name}:{e.fingerprint}" for r, e in sorted(self.roles.items()))
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def same(self, a: str, b: str) -> bool:
        """Whether roles ``a`` and ``b`` are one encoder (so their vectors share a space)."""
        ea, eb = self.roles.get(a), self.roles.get(b)
        return ea is not None and ea is eb

    def dims(self) -> dict[str, int]:
        return {role: int(e.dim) for role, e in self.roles.items()}

    @property
    def primary(self) -> Encoder:
        """The encoder of the ``text`` role (else any): what plain-model callers mean by "the encoder"."""
        return self.roles.get(TEXT) or next(iter(self.roles.values()))


def plain(encoder: Encoder, sound: Encoder | None = None) -> Towers:
    """One encoder in every role it can fill (the sound role: ``sound``, a similarity view of it)."""
    roles: dict[str, Encoder] = {}
    for role in (IMAGE, TEXT, AUDIO):
        if role in encoder.modalities or (role == AUDIO and TEXT in encoder.modalities):
            roles[role] = encoder  # recordings through speech when there is no sound tower
    if sound is not None:
        roles[SOUND] = sound
    return Towers(encoder.name, roles, composite=False)


def parse_composite(spec: str) -> dict[str, str]:
    """``image=A,audio=B`` -> {"image": "A", "audio": "B"}.

    Raises:
        ModelError: a part without ``=``, an unknown role, a role named twice.
    """
    out: dict[str, str] = {}
    for part in spec.split(","):
        role, sep, model = part.partition("=")
        role, model = role.strip(), model.strip()
        if not sep or not model:
            raise ModelError(f"bad composite model {spec!r}: expected ROLE=MODEL,... (roles: {', '.join(ROLES)})")
        if role not in ROLES:
            raise ModelError(f"unknown tower role {role!r} in {spec!r}: one of {', '.join(ROLES)}")
        if role in out:
            raise ModelError(f"role {role!r} named twice in {spec!r}")
        out[role] = model
    return out


def fill(name: str, given: Mapping[str, Encoder]) -> Towers:
    """The towers of a composite: the roles given, and the others from encoders that can fill them."""
    roles = dict(given)
    if TEXT not in roles:
        for source in (IMAGE, AUDIO):
            if source in roles and TEXT in roles[source].modalities:
                roles[TEXT] = roles[source]
                break
    if SOUND not in roles and AUDIO in roles and AUDIO in roles[AUDIO].modalities:
        roles[SOUND] = roles[AUDIO]  # the sound tower is its own sound-to-sound space
    for role, enc in roles.items():
        needs = TEXT if role == TEXT else IMAGE if role == IMAGE else AUDIO
        if needs not in enc.modalities and not (role == AUDIO and TEXT in enc.modalities):
            raise ModelError(f"model {enc.name} has no {needs} tower: it cannot be the {role} tower of {name}")
    return Towers(name, roles, composite=True)


def record(towers: Towers) -> dict[str, Any]:
    """What a new index records of its towers (``model`` and ``created`` are the caller's)."""
    return {
        "dim": towers.primary.dim,
        "dims": towers.dims(),
        "fingerprint": towers.fingerprint,
        "modalities": sorted({m for e in towers.roles.values() for m in e.modalities}),
    }


def check_recorded(towers: Towers, meta: Mapping[str, Any]) -> None:
    """Refuse towers that load other weights than an index recorded (``dim``, ``dims``, ``fingerprint``).

    Raises:
        ModelMismatchError: a dimension or the fingerprint differs.
    """
    dims = towers.dims()
    was = (meta.get("dim"), meta.get("fingerprint"))
    if was != (towers.primary.dim, towers.fingerprint) or any(
        dims.get(r) != d for r, d in (meta.get("dims") or {}).items()
    ):
        raise ModelMismatchError(
            f"model {towers.name!r} now loads different weights (dim {towers.primary.dim}, fingerprint "
            f"{towers.fingerprint}) than the index was built with (dim {was[0]}, fingerprint {was[1]}): "
            "re-index into a new --index"
        )


def recorded_dim(role: str, dims: Any, dim: Any) -> int | None:
    """The dimension an index recorded for a role's vectors; indexes from before roles recorded one ``dim``
    (and had no sound role). None: nothing recorded yet."""
    if isinstance(dims, dict) and role in dims:
        return int(dims[role])
    if dims is None and dim is not None and role != SOUND:
        return int(dim)
    return None
