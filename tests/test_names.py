import pytest

from provisioner.errors import InvalidName
from provisioner.names import BucketName, Identifier, Namespace


@pytest.mark.parametrize("good", ["a", "sales", "sales-eu-2", "x" * 61, "0abc"])
def test_namespace_accepts_dns_labels(good: str) -> None:
    ns = Namespace(good)
    assert ns == good
    assert ns.prefix == f"{good}/"
    assert ns.user_name == f"dp-{good}"


def test_long_namespaces_get_user_names_aws_accepts() -> None:
    # AWS IAM refuses user names over 64 characters; dp-<namespace> passes that from 62 characters on.
    a, b = Namespace("x" * 62), Namespace("x" * 60 + "ab")
    c = Namespace("x" * 63)
    names = {n.user_name for n in (a, b, c)}
    assert len(names) == 3
    assert all(len(n) == 64 and n.startswith("dp-" + "x" * 52 + "-") for n in names)
    assert Namespace("x" * 63).user_name == c.user_name  # deterministic


@pytest.mark.parametrize("bad", ["../x", "A B", "x" * 64, "*", "", "-a", "a-", "Sales", "a/b", "a.b", None, 3])
def test_namespace_rejects_unsafe_values(bad: object) -> None:
    with pytest.raises(InvalidName, match="not a safe slug"):
        Namespace(bad)


@pytest.mark.parametrize("bad", ["ab", "Bucket", "a..b", "192.168.1.1", "-ab", "x" * 64])
def test_bucket_rejects_invalid(bad: str) -> None:
    with pytest.raises(InvalidName):
        BucketName(bad)


def test_identifier() -> None:
    assert Identifier("customers") == "customers"
    for bad in ['a"b', "1abc", "a b", "x" * 64, "a;drop"]:
        with pytest.raises(InvalidName):
            Identifier(bad)
