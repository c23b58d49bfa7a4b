"""Tests of sealed messages: round trips, and one bad input for every way ``unseal`` refuses a message.

Bad messages are assembled from the same CMS building blocks ``seal`` uses (``cms.sign``,
``cms.envelope``), so each one differs from a good message in exactly the way the test names.
"""

from __future__ import annotations

import datetime as dt
import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.errors import EXIT_FAILURES, EXIT_USAGE
from conformance.etee.cms import envelope, sign, verify_signed
from conformance.etee.errors import SealError, UnsealError, UnsealProblem
from conformance.etee.etk import build_etk, parse_etk
from conformance.etee.pki import Credential, Credentials, Holder, HolderId
from conformance.etee.seal import same_signer, seal, unseal
from tests.test_etee_pki import LUC_SSIN, World, etee_world

PAYLOAD = b'{"resourceType":"Immunization","status":"completed"}'


@pytest.fixture
def world() -> World:
    return etee_world()


def sealed_for_register(world: World, sender: Holder | None = None, **kwargs: object) -> bytes:
    holder = sender or world.luc
    return seal(PAYLOAD, sender=holder.credentials(), recipients=[world.depot.register_etk], **kwargs)  # type: ignore[arg-type]


def open_as_register(world: World, message: bytes, **kwargs: object) -> object:
    return unseal(message, recipient=world.register.encryption, trust=[world.root], **kwargs)  # type: ignore[arg-type]


def refused(world: World, message: bytes, problem: UnsealProblem, **kwargs: object) -> UnsealError:
    with pytest.raises(UnsealError) as caught:
        open_as_register(world, message, **kwargs)
    assert caught.value.problem is problem, caught.value.message
    assert caught.value.code == problem.value and caught.value.exit_code == EXIT_FAILURES
    return caught.value


def assemble(
    world: World,
    *,
    inner: bytes | None = None,
    outer_signer: Credential | None = None,
    enveloped: bytes | None = None,
) -> bytes:
    """A message built layer by layer, each layer replaceable."""
    inner = inner if inner is not None else sign(PAYLOAD, world.luc.authentication)
    enveloped = (
        enveloped if enveloped is not None else envelope(inner, [world.register.encryption.certificate])
    )
    return sign(enveloped, outer_signer or world.luc.authentication)


# --- round trips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["pss", "pkcs1v15"])
def test_round_trip(world: World, scheme: str) -> None:
    now = dt.datetime.now(dt.UTC)
    message = sealed_for_register(world, signature_scheme=scheme, authentication_scheme=scheme, now=now)
    result = open_as_register(world, message)
    assert result.payload == PAYLOAD  # type: ignore[attr-defined]
    assert result.sender == HolderId("SSIN", LUC_SSIN)  # type: ignore[attr-defined]
    assert result.sender_certificate == world.luc.authentication.certificate  # type: ignore[attr-defined]
    assert result.signature_certificate == world.luc.authentication.certificate  # type: ignore[attr-defined]
    assert result.inner_scheme == result.outer_scheme == scheme  # type: ignore[attr-defined]
    assert result.signing_time == now.replace(microsecond=0)  # type: ignore[attr-defined]
    assert len(result.checks) == 7  # type: ignore[attr-defined]
    assert "chain to a trust anchor" in result.checks[-1]  # type: ignore[attr-defined]


def test_the_three_layers(world: World) -> None:
    message = sealed_for_register(world)
    outer = verify_signed(message)
    assert outer.signer == world.luc.authentication.certificate and outer.scheme == "pss"
    from asn1crypto import cms

    enveloped = cms.ContentInfo.load(outer.content)
    assert enveloped["content_type"].native == "enveloped_data"
    info = enveloped["content"]["encrypted_content_info"]
    assert info["content_encryption_algorithm"]["algorithm"].native == "aes128_cbc"
    (recipient,) = enveloped["content"]["recipient_infos"]
    assert recipient.chosen["key_encryption_algorithm"]["algorithm"].native == "rsaes_pkcs1v15"
    assert PAYLOAD not in message


def test_several_recipients_can_each_open_it(world: World) -> None:
    recipients = [
        world.depot.register_etk,
        parse_etk(build_etk(world.pharmacy)),
        world.luc.encryption.certificate,
    ]
    message = seal(PAYLOAD, sender=world.luc.credentials(), recipients=recipients)
    for holder in (world.register, world.pharmacy, world.luc):
        assert unseal(message, recipient=holder.encryption).payload == PAYLOAD


def test_eid_inner_signature_with_ehealth_outer(world: World) -> None:
    """Another certificate inside (an eID, PKCS#1 v1.5), the same holder: accepted."""
    message = seal(
        PAYLOAD,
        sender=Credentials(world.luc.authentication, world.luc_eid),
        recipients=[world.depot.register_etk],
        signature_scheme="pkcs1v15",
    )
    result = open_as_register(world, message)
    assert result.signature_certificate == world.luc_eid.certificate  # type: ignore[attr-defined]
    assert result.inner_scheme == "pkcs1v15" and result.outer_scheme == "pss"  # type: ignore[attr-defined]


def test_same_signer_rule(world: World) -> None:
    luc = world.luc.authentication.certificate
    assert same_signer(luc, luc)
    assert same_signer(luc, world.luc_eid.certificate)  # same SSIN
    assert same_signer(luc, world.stranger.authentication.certificate)  # same SSIN, other CA: trust decides
    assert not same_signer(luc, world.pharmacy.authentication.certificate)
    assert not same_signer(world.root, world.pharmacy.encryption.certificate)


def test_seal_refuses_unusable_recipients(world: World) -> None:
    with pytest.raises(SealError, match="1024-bit key") as caught:
        seal(PAYLOAD, sender=world.luc.credentials(), recipients=[world.weak.encryption.certificate])
    assert caught.value.exit_code == EXIT_USAGE
    with pytest.raises(SealError, match="at least one recipient"):
        seal(PAYLOAD, sender=world.luc.credentials(), recipients=[])
    with pytest.raises(SealError, match="signature scheme"):
        seal(
            PAYLOAD,
            sender=world.luc.credentials(),
            recipients=[world.depot.register_etk],
            signature_scheme="md5",
        )  # type: ignore[arg-type]


def test_custom_skew_and_key_size(world: World) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    assert open_as_register(world, sealed_for_register(world, now=past), max_skew=900).payload == PAYLOAD  # type: ignore[attr-defined]
    weak = seal(
        PAYLOAD,
        sender=world.luc.credentials(),
        recipients=[world.weak.encryption.certificate],
        min_key_bits=1024,
    )
    assert unseal(weak, recipient=world.weak.encryption, min_key_bits=1024).payload == PAYLOAD


def test_untrusted_sender_is_fine_without_trust_anchors(world: World) -> None:
    message = sealed_for_register(world, sender=world.stranger)
    assert unseal(message, recipient=world.register.encryption).payload == PAYLOAD


# --- every refusal --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage", [b"", b"garbage", b"\x30\x80\x00\x00", b"\x30\x03\x06\x01\x00", bytes(range(256))]
)
def test_garbage_is_not_cms(world: World, garbage: bytes) -> None:
    refused(world, garbage, UnsealProblem.NOT_CMS)


def test_an_envelope_alone_is_not_a_signed_message(world: World) -> None:
    bare = envelope(sign(PAYLOAD, world.luc.authentication), [world.register.encryption.certificate])
    error = refused(world, bare, UnsealProblem.NOT_CMS)
    assert "enveloped_data" in error.message


def test_outer_signature_invalid(world: World) -> None:
    message = bytearray(sealed_for_register(world))
    message[-1] ^= 0x01  # the outer SignerInfo's signature
    error = refused(world, bytes(message), UnsealProblem.OUTER_SIGNATURE_INVALID)
    assert "outer layer" in error.message and "does not verify" in error.message


def test_outer_content_changed_after_signing(world: World) -> None:
    message = sealed_for_register(world)
    outer = verify_signed(message)
    tampered_content = bytearray(outer.content)
    tampered_content[-5] ^= 0xFF
    tampered = message.replace(outer.content, bytes(tampered_content))
    error = refused(world, tampered, UnsealProblem.OUTER_SIGNATURE_INVALID)
    assert "message-digest" in error.message


def test_signed_but_not_enveloped_is_malformed(world: World) -> None:
    error = refused(world, sign(PAYLOAD, world.luc.authentication), UnsealProblem.MALFORMED)
    assert "EnvelopedData" in error.message


def test_wrong_recipient(world: World) -> None:
    message = seal(PAYLOAD, sender=world.luc.credentials(), recipients=[parse_etk(build_etk(world.pharmacy))])
    error = refused(world, message, UnsealProblem.WRONG_RECIPIENT)
    assert "not for this recipient" in error.message and "CBE=0811122215" in error.message


def test_weak_recipient_key(world: World) -> None:
    message = seal(
        PAYLOAD,
        sender=world.luc.credentials(),
        recipients=[world.weak.encryption.certificate],
        min_key_bits=1024,
    )
    with pytest.raises(UnsealError) as caught:
        unseal(message, recipient=world.weak.encryption)
    assert caught.value.problem is UnsealProblem.WEAK_RECIPIENT_KEY
    assert "1024 bits" in caught.value.message


def test_flipped_ciphertext_byte_is_a_decryption_failure(world: World) -> None:
    """The sender re-signs a tampered envelope: the outer signature holds, the padding does not."""
    from asn1crypto import cms

    enveloped = envelope(sign(PAYLOAD, world.luc.authentication), [world.register.encryption.certificate])
    ciphertext = cms.ContentInfo.load(enveloped)["content"]["encrypted_content_info"][
        "encrypted_content"
    ].native
    flipped = bytearray(ciphertext)
    flipped[-17] ^= 0xFF  # the last byte of the next-to-last block turns into the padding byte
    message = assemble(world, enveloped=enveloped.replace(ciphertext, bytes(flipped)))
    error = refused(world, message, UnsealProblem.DECRYPTION_FAILED)
    assert "padding" in error.message


def test_flipped_byte_in_the_middle_garbles_the_inner_layer(world: World) -> None:
    from asn1crypto import cms

    enveloped = envelope(sign(PAYLOAD, world.luc.authentication), [world.register.encryption.certificate])
    ciphertext = cms.ContentInfo.load(enveloped)["content"]["encrypted_content_info"][
        "encrypted_content"
    ].native
    flipped = bytearray(ciphertext)
    flipped[0] ^= 0xFF  # garbles the first block: the DER header of the inner ContentInfo
    message = assemble(world, enveloped=enveloped.replace(ciphertext, bytes(flipped)))
    refused(world, message, UnsealProblem.DECRYPTION_FAILED)


def test_wrong_private_key_is_a_decryption_failure(world: World) -> None:
    message = sealed_for_register(world)
    impostor = Credential(world.register.encryption.certificate, world.pharmacy.encryption.private_key)
    with pytest.raises(UnsealError) as caught:
        unseal(message, recipient=impostor)
    assert caught.value.problem is UnsealProblem.DECRYPTION_FAILED


def test_inner_signature_invalid(world: World) -> None:
    inner = bytearray(sign(PAYLOAD, world.luc.authentication))
    inner[-1] ^= 0x01
    error = refused(world, assemble(world, inner=bytes(inner)), UnsealProblem.INNER_SIGNATURE_INVALID)
    assert "inner layer" in error.message


def test_inner_and_outer_signer_differ(world: World) -> None:
    message = assemble(world, inner=sign(PAYLOAD, world.pharmacy.authentication))
    error = refused(world, message, UnsealProblem.SIGNER_MISMATCH)
    assert "CBE=0987654394" in error.message and f"SSIN={LUC_SSIN}" in error.message


@pytest.mark.parametrize("minutes", [-6, 6, -600])
def test_signing_time_too_far_from_now(world: World, minutes: int) -> None:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
    error = refused(world, sealed_for_register(world, now=moment), UnsealProblem.SIGNING_TIME_SKEW)
    assert ("ahead of" if minutes > 0 else "behind") in error.message and "at most 300 s" in error.message


def test_signing_time_is_checked_against_the_given_now(world: World) -> None:
    moment = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    message = sealed_for_register(world, now=moment)
    refused(world, message, UnsealProblem.SIGNING_TIME_SKEW)
    # the certificates were not valid then: the clock check passes, the validity check does not
    refused(world, message, UnsealProblem.CERTIFICATE_EXPIRED, now=moment + dt.timedelta(seconds=30))


def test_sender_certificate_expired_at_signing_time(world: World) -> None:
    error = refused(
        world, sealed_for_register(world, sender=world.expired), UnsealProblem.CERTIFICATE_EXPIRED
    )
    assert "was not valid at the signing time" in error.message


def test_untrusted_sender(world: World) -> None:
    error = refused(world, sealed_for_register(world, sender=world.stranger), UnsealProblem.UNTRUSTED_SENDER)
    assert "not issued by a trusted CA" in error.message


# --- robustness -----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600))
def test_random_bytes_only_ever_raise_unseal_error(world: World, data: bytes) -> None:
    with pytest.raises(UnsealError):
        open_as_register(world, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255), cut=st.booleans())
def test_damaged_messages_only_ever_raise_unseal_error(
    world: World, position: int, mask: int, cut: bool
) -> None:
    message = _good_message()
    index = position % len(message)
    damaged = (
        message[:index] if cut else message[:index] + bytes([message[index] ^ mask]) + message[index + 1 :]
    )
    try:
        result = open_as_register(world, damaged, now=_GOOD_TIME)
    except UnsealError:
        return
    assert result.payload == PAYLOAD  # type: ignore[attr-defined]  # a byte no check covers (e.g. a DER length form)


_GOOD_TIME = dt.datetime.now(dt.UTC)


@functools.cache
def _good_message() -> bytes:
    world = etee_world()
    return seal(
        PAYLOAD, sender=world.luc.credentials(), recipients=[world.depot.register_etk], now=_GOOD_TIME
    )
