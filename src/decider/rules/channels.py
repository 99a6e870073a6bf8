"""Channels: the built-in web and email, and those rule files define (push, SMS, in-app).

A channel says which slots its placements fill and what its consent policy is. Web and
email are built in, their policies in the `consent:` section, so rule files written before
channels could be defined load unchanged; a `channels:` section adds others, each with its
slots (and the most characters each may hold) and its own policy. Slot limits are checked
at load, for every text a placement gives a slot: a text over its limit is an error in
`decider check`, never a message cut at send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from decider.rules.files import Path_, SourceFile
from decider.ruleset import ChannelPolicy, CompiledChannel

BUILT_IN: dict[str, tuple[str, ...]] = {
    "web": ("hero", "cta", "proof"),
    "email": ("subject", "opening", "proof", "cta"),
}
# where a problem is reported: a file, the path of the value at fault, the message, the rule
Report = Callable[[SourceFile, Path_, str, str | None], None]


def compile_channels(
    sources: list[SourceFile],
    built_in: Mapping[str, tuple[SourceFile, ChannelPolicy]],
    report: Report,
) -> dict[str, CompiledChannel]:
    """Every channel: the built-in ones with the policies the `consent:` section gives them
    (`built_in`, with the file it is in), then those of `channels:` sections, in file order.
    A defined channel named as a built-in one or as another is reported, not kept."""
    channels: dict[str, CompiledChannel] = {}
    for name, slots in BUILT_IN.items():
        if name not in built_in:  # no `consent:` section, reported: the rules will not serve
            channels[name] = CompiledChannel(name, slots, {}, ChannelPolicy(purposes=()))
            continue
        source, policy = built_in[name]
        channels[name] = CompiledChannel(name, slots, {}, policy)
        _check_policy(source, ("consent", name), name, policy, report)
    for source in sources:
        for index, rule in enumerate(source.rules.channels):
            path: Path_ = ("channels", index)
            if rule.id in BUILT_IN:
                report(
                    source,
                    (*path, "id"),
                    f"{rule.id} is built in (slots {', '.join(BUILT_IN[rule.id])}); its policy "
                    "is in the `consent:` section",
                    rule.id,
                )
                continue
            if rule.id in channels:
                report(source, (*path, "id"), f"duplicate channel id {rule.id!r}", rule.id)
                continue
            limits = {s: slot.max_length for s, slot in rule.slots.items() if slot.max_length}
            sms = frozenset(s for s, slot in rule.slots.items() if slot.count == "sms")
            channels[rule.id] = CompiledChannel(
                rule.id, tuple(rule.slots), limits, rule.consent, sms
            )
            _check_policy(source, (*path, "consent"), rule.id, rule.consent, report)
    return channels


def _check_policy(
    source: SourceFile, path: Path_, name: str, policy: ChannelPolicy, report: Report
) -> None:
    if name == "email" and policy.banner:
        report(
            source,
            (*path, "banner"),
            "email is decided at send time, where no consent banner is: it takes stored "
            "consent records only",
            None,
        )
    for i, purpose in enumerate(policy.gpc_revokes):
        if purpose not in policy.purposes:
            report(
                source,
                (*path, "gpc_revokes", i),
                f"{purpose!r} is not one of {name}'s purposes "
                f"({', '.join(policy.purposes)}); Sec-GPC would withdraw nothing",
                None,
            )


def too_long(channel: CompiledChannel, content: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(slot, why) for each text of `content` over its slot's limit on `channel`."""
    for slot, text in content.items():
        limit = channel.limits.get(slot)
        if limit is None:
            continue
        if slot in channel.sms and not _gsm7(text):
            # sent as UCS-2: one message holds 70 of its units where GSM-7's holds 160
            units, allowed = len(text.encode("utf-16-le")) // 2, limit * 70 // 160
            if units > allowed:
                outside = "".join(dict.fromkeys(c for c in text if c not in _GSM7))[:5]
                yield (
                    slot,
                    f"{slot} holds characters outside GSM-7 ({outside!r}), so it is sent as "
                    f"UCS-2: {units} of them; {channel.id} allows {allowed} in {slot} "
                    f"(as {limit} GSM-7 ones)",
                )
            continue
        length = _septets(text) if slot in channel.sms else len(text)
        if length > limit:
            yield slot, f"{slot} is {length} characters; {channel.id} allows {limit} in {slot}"


# GSM 03.38: the default alphabet, and the extension table's characters (two septets each)
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
_GSM7 = _GSM7_BASIC | _GSM7_EXTENSION


def _gsm7(text: str) -> bool:
    return all(c in _GSM7 for c in text)


def _septets(text: str) -> int:
    """A GSM-7 text's length as sent: an extension character (€, [, ]...) takes two."""
    return len(text) + sum(c in _GSM7_EXTENSION for c in text)
