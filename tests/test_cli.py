"""Every bad input is one line on stderr and exit code 2; the listing commands read the registries."""

import urllib.error

import pytest

SAMPLE = ["--dataset", "cifar10-sample", "--epochs", "1", "--limit-train", "200", "--limit-test", "50", "--quiet"]


def assert_usage_error(result, *fragments):
    code, out, err = result
    assert code == 2, (code, out, err)
    assert err.count("\n") == 1 and err.startswith("bench: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--model", "resnet", "--loss", "ce"], ["unknown model 'resnet'", "cnn, cnn-tiny, mlp2, resmlp"]),
        (["--model", "cnn", "--loss", "focl"], ["unknown loss 'focl'", "did you mean focal"]),
        (["--model", "cnn", "--loss", "ce", "--dataset", "mnist"], ["unknown dataset 'mnist'", "cifar10"]),
        (["--model", "cnn", "--loss", "ce", "--lr", "0"], ["--lr must be greater than 0"]),
        (["--model", "cnn", "--loss", "ce", "--lr", "-1"], ["--lr must be greater than 0"]),
        (["--model", "cnn", "--loss", "ce", "--epochs", "0"], ["--epochs must be at least 1"]),
        (["--model", "cnn", "--loss", "ce", "--batch-size", "0"], ["--batch-size must be at least 1"]),
        (["--model", "cnn", "--loss", "focal", "--gamma", "-0.5"], ["gamma must lie in [0, inf)"]),
        (["--model", "cnn", "--loss", "ce", "--gamma", "2"], ["loss 'ce' has no hyperparameter gamma"]),
        (["--model", "cnn", "--loss", "ce", "--val-fraction", "1"], ["--val-fraction must lie strictly between 0 and 1"]),
        (["--model", "cnn", "--loss", "ce", "--val-fraction", "0"], ["--val-fraction must lie strictly between 0 and 1"]),
        (["--model", "cnn", "--loss", "ce", "--epochs", "two"], ["invalid int value: 'two'"]),
        (["--model", "cnn", "--loss", "focal", "--gamma", "x"], ["gamma must be [0, inf), got 'x'"]),
    ],
)
def test_bad_run_arguments_exit_2_with_one_line(cli, args, fragments, tmp_path):
    full = ["run", *SAMPLE, "--out", str(tmp_path), *args]
    assert_usage_error(cli(*full), *fragments)
    assert not any(tmp_path.iterdir()), "a rejected run must not write a record"


def test_unknown_subcommand_and_missing_required_argument(cli):
    assert_usage_error(cli("train"), "invalid choice")
    assert_usage_error(cli("run", "--loss", "ce", "--dataset", "cifar10"), "--model")


def test_data_root_without_a_known_layout(cli, tmp_path):
    (tmp_path / "junk").mkdir()
    result = cli("run", "--model", "cnn", "--loss", "ce", "--dataset", "cifar10", "--data-root", str(tmp_path / "junk"))
    assert_usage_error(result, "no recognisable CIFAR-10 layout", "cifar-10-batches-py", "train/<class>/", ".tar.gz")
    result = cli("run", "--model", "cnn", "--loss", "ce", "--dataset", "cifar10", "--data-root", str(tmp_path / "nope"))
    assert_usage_error(result, "does not exist")


def test_missing_dataset_without_network_says_how_to_provide_it(cli, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    result = cli("run", "--model", "cnn", "--loss", "ce", "--dataset", "cifar10", "--quiet")
    assert_usage_error(result, "could not download CIFAR-10", "--data-root")


def test_listings_come_from_the_registries(cli, monkeypatch):
    from bench.losses import LOSSES

    monkeypatch.setenv("COLUMNS", "80")  # a narrow terminal: nothing may be cut to an ellipsis
    code, out, _ = cli("losses")
    flags = {"--" + k.replace("_", "-") for n in LOSSES.names() for k in LOSSES.get(n).params}
    assert code == 0 and "…" not in out and {"--gamma", "--label-smoothing", "--class-weights"} <= flags
    assert all(f" {flag} " in out for flag in flags) and all(f"{name}:" in out for name in LOSSES.names())
    code, out, _ = cli("models", "cnn*")
    assert code == 0 and "cnn-tiny" in out and "mlp2" not in out
    code, out, _ = cli("datasets")
    assert code == 0 and "cifar10-sample" in out
