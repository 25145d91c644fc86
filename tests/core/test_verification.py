"""verification_hash gives the same value as journy.io's recipes in PHP, Node, Ruby and the openssl CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from journy_core.errors import InvalidArgumentError
from journy_core.verification import verification_hash

SECRET = "whsec_journy-test-1"
LONG_ID = "abc123-" * 300

# (secret, identifier, expected hex). Computed on 2026-11-22 with two of the recipes in journy.io's developer
# docs (Identity verification); each value was identical in both:
#   PHP 8.2.36 (cli), Debian package php8.2-cli 8.2.36-1~deb12u1:
#     php -r 'echo hash_hmac("sha256", $argv[1], $argv[2]), "\n";' -- "$ID" "$SECRET"
#   Ruby 3.1.7p261 (Debian package ruby3.1):
#     ruby -ropenssl -e 'puts OpenSSL::HMAC.hexdigest("sha256", ARGV[1], ARGV[0].to_s)' "$ID" "$SECRET"
#   with LANG=C.UTF-8, so non-ASCII arguments reach both as UTF-8 bytes. Exceptions to that one-liner:
#   - LONG_ID:
#     php -r 'echo hash_hmac("sha256", str_repeat("abc123-", 300), $argv[1]), "\n";' -- "$SECRET"
#     ruby -ropenssl -e 'puts OpenSSL::HMAC.hexdigest("sha256", ARGV[0], ("abc123-" * 300).to_s)' "$SECRET"
#   - the docs' own literals (secret 'secret', integer ID 42):
#     php -r 'echo hash_hmac("sha256", 42, "secret"), "\n";'
#     ruby -ropenssl -e 'puts OpenSSL::HMAC.hexdigest("sha256", "secret", 42.to_s)'
#   - a binary secret:
#     php -r 'echo hash_hmac("sha256", "42", "\xff\x00key"), "\n";'
#     ruby -ropenssl -e 'puts OpenSSL::HMAC.hexdigest("sha256", "\xff\x00key".b, "42")'
VECTORS: list[tuple[str | bytes, str, str]] = [
    (SECRET, "user_12345", "dbb3552c60e163a2d96b6fef8c63c37858866fd012006b4ea5a083149f25dd08"),
    (SECRET, "42", "4d529492313fc40e35ad02a3fd8aa40d0b8942b31638fae4fff521bd3cb26d8b"),
    (
        SECRET,
        "0b4c3a4e-2f7e-4a6c-9a3b-5f1d2e3c4b5a",
        "850b0fb8c30118f2d737ac7f176373445a4eaf80747f95cfb03a9185e972134f",
    ),
    (SECRET, "usér-ø-😀", "a65e43f50ce6d00ca2e8a61b78f52e45baa7b872213aadc63e7d7895e0c5f612"),
    (SECRET, "0", "84d48fe4bf1a144c42b44d04b25b5d4f149896a1bda429b131e19c0e621cb8bc"),
    (SECRET, LONG_ID, "75d7696174879cdbfbd87ad23fd6367573ba003f3b069fc125a64f961801f336"),
    ("clé-secrète-ü", "42", "244d553ccbdd34fbd48e638ada339f861f4d3d38f5203b38d0c74aa5aa16de84"),
    ("secret", "42", "93c121e7aa437a1e01e3c512c6f0ce3c821a839025dca4408f85616de4aaee70"),
    (b"\xff\x00key", "42", "35358d8e7bcf6ccf63ccde8bf199bf333794d45863f8140c5b29fe46179cc77f"),
]
TEXT_VECTORS = [(secret, ident, hexdigest) for secret, ident, hexdigest in VECTORS if isinstance(secret, str)]


@pytest.mark.parametrize(("secret", "identifier", "expected"), VECTORS)
def test_matches_php_and_ruby_recipes(secret: str | bytes, identifier: str, expected: str) -> None:
    assert verification_hash(secret, identifier) == expected


def test_output_is_lowercase_hex_of_sha256_length() -> None:
    value = verification_hash(SECRET, "user_12345")
    assert len(value) == 64
    assert value == value.lower()
    int(value, 16)


def test_int_identifier_hashes_like_its_str() -> None:
    assert verification_hash(SECRET, 42) == verification_hash(SECRET, "42")
    assert verification_hash(SECRET, 0) == verification_hash(SECRET, "0")


def test_uuid_identifier_hashes_like_its_str() -> None:
    value = uuid.UUID("0b4c3a4e-2f7e-4a6c-9a3b-5f1d2e3c4b5a")
    assert verification_hash(SECRET, value) == verification_hash(SECRET, str(value))


def test_str_and_bytes_secret_give_the_same_hash() -> None:
    assert verification_hash("clé-secrète-ü", "42") == verification_hash("clé-secrète-ü".encode(), "42")


def test_different_secrets_give_different_hashes() -> None:
    assert verification_hash("secret-a", "42") != verification_hash("secret-b", "42")


@pytest.mark.parametrize("secret", ["", "   ", "\n\t", b"", b"  "])
def test_blank_secret_is_refused_naming_the_secret(secret: str | bytes) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        verification_hash(secret, "42")
    assert info.value.argument == "secret"


@pytest.mark.parametrize("secret", [None, 42, ["s"]])
def test_secret_of_wrong_type_is_refused_naming_the_secret(secret: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        verification_hash(secret, "42")  # type: ignore[arg-type]
    assert info.value.argument == "secret"


def test_undecodable_secret_is_refused_without_showing_it() -> None:
    secret = "top-secret-\udcff-value"
    with pytest.raises(InvalidArgumentError) as info:
        verification_hash(secret, "42")
    assert info.value.argument == "secret"
    assert "top-secret" not in str(info.value)
    assert "\udcff" not in str(info.value)


@pytest.mark.parametrize("identifier", ["", "  ", None, True, 4.2, b"42", object(), "bad-\ud800"])
def test_bad_identifier_is_refused_without_showing_the_secret(identifier: object) -> None:
    secret = "do-not-print-me-7c1d"
    with pytest.raises(InvalidArgumentError) as info:
        verification_hash(secret, identifier)  # type: ignore[arg-type]
    assert info.value.argument == "identifier"
    assert secret not in str(info.value)
    assert secret not in repr(info.value)


def test_invalid_argument_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        verification_hash("", "42")


# -- the recipes run live, when their tools are installed ---------------------------------------------------

NODE = shutil.which("node") or "/usr/bin/node"
OPENSSL = shutil.which("openssl")

# journy.io's Node recipe, createHmac("sha256", secret).update(id).digest("hex"), for each [secret, id] given.
NODE_RECIPE = """
const { createHmac } = require("crypto");
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const pairs = JSON.parse(input);
  const hashes = pairs.map(([secret, id]) => createHmac("sha256", secret).update(id).digest("hex"));
  process.stdout.write(JSON.stringify(hashes));
});
"""


NO_NODE = "node is not installed; the Node createHmac recipe cannot be run"


@pytest.mark.skipif(not shutil.which(NODE), reason=NO_NODE)
def test_matches_node_create_hmac_recipe() -> None:
    pairs = [[secret, ident] for secret, ident, _ in TEXT_VECTORS]
    done = subprocess.run(
        [NODE, "-e", NODE_RECIPE],
        input=json.dumps(pairs),
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=True,
        timeout=60,
    )
    node_values = json.loads(done.stdout)
    assert node_values == [verification_hash(secret, ident) for secret, ident, _ in TEXT_VECTORS]
    assert node_values == [expected for _, _, expected in TEXT_VECTORS]


@pytest.mark.skipif(OPENSSL is None, reason="the openssl command-line tool is not installed")
@pytest.mark.parametrize(("secret", "identifier", "expected"), TEXT_VECTORS)
def test_matches_openssl_dgst_hmac(secret: str, identifier: str, expected: str) -> None:
    assert OPENSSL is not None
    done = subprocess.run(
        [OPENSSL, "dgst", "-sha256", "-hmac", secret],
        input=identifier.encode("utf-8"),
        capture_output=True,
        check=True,
        timeout=60,
    )
    # "SHA2-256(stdin)= <hex>" (OpenSSL 3) or "(stdin)= <hex>" (1.1).
    openssl_value = done.stdout.decode().strip().rsplit("= ", 1)[-1]
    assert openssl_value == verification_hash(secret, identifier) == expected
