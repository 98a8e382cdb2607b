import pytest
import torch

from bouquet.datasets import data_root, load_dataset
from bouquet.models import build_model
from bouquet.models.nets import MLP, SAGE, CharLSTM, SmallCNN


@pytest.mark.parametrize(
    ("name", "cls"),
    [("cora", SAGE), ("fashion-mnist", SmallCNN), ("breastmnist", SmallCNN),
     ("heart-disease", MLP), ("digits", MLP), ("tinyshakespeare", CharLSTM)],
)
def test_model_is_chosen_by_data_kind_and_fits_the_data(name, cls):
    data = load_dataset(name, data_root())
    model = build_model(data)
    assert isinstance(model, cls)
    if cls is SAGE:
        out = model(torch.from_numpy(data.x[:50]), torch.zeros(2, 0, dtype=torch.long))
        assert out.shape == (50, data.num_classes)
    else:
        out = model(torch.from_numpy(data.x_train[:4]))
        expected = data.vocab_size if cls is CharLSTM else data.num_classes
        assert out.shape == (4, expected)


def test_cnn_handles_cifar_sized_input():
    assert SmallCNN(3, 32, 32, 10)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_fedavg_cnn_matches_the_fedntd_code_shapes():
    from bouquet.models.nets import FedAvgCNN

    cifar, med = FedAvgCNN(3, 32, 32, 10), FedAvgCNN(1, 28, 28, 2)
    assert cifar.head[1].in_features == 4096 and med.head[1].in_features == 3136  # 64·8·8, 64·7·7
    # FedKPer's / FedNTD's FedAvgNetCIFAR: 2432 + 51264 + 2,097,664 + 5130
    assert sum(p.numel() for p in cifar.parameters()) == 2_156_490
    assert cifar(torch.zeros(2, 3, 32, 32)).shape == (2, 10) and med(torch.zeros(2, 1, 28, 28)).shape == (2, 2)
    assert isinstance(build_model(load_dataset("breastmnist", data_root()), "fedavg-cnn"), FedAvgCNN)
    with pytest.raises(ValueError, match="needs an image dataset"):
        build_model(load_dataset("heart-disease", data_root()), "fedavg-cnn")
