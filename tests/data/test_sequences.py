"""All-positions (SASRec-style) training samples and batches."""

import numpy as np
import pytest
import torch

from mmrec.data.sequences import SequenceCollator, TrainSequences


def test_every_interaction_after_the_first_is_a_target_once_with_its_past_as_input():
    sequences = [np.arange(100, 112), np.array([7]), np.array([5, 6]), np.arange(200, 203)]
    data = TrainSequences(sequences, length=4)
    seen = {u: [] for u in range(len(sequences))}
    for i in range(len(data)):
        user, inputs, targets, mask = data[(i, 3)]
        seq = sequences[user].tolist()
        for x, t in zip(inputs[mask].tolist(), targets[mask].tolist()):
            assert seq.index(t) == seq.index(x) + 1  # each input is followed by its target
        assert mask[-1] and (not mask.any() or mask[mask.argmax() :].all())  # right-aligned
        seen[user] += targets[mask].tolist()
    for user, seq in enumerate(sequences):
        assert sorted(seen[user]) == sorted(seq[1:].tolist())  # exactly once; a one-item user has none
    assert len(data) == 3 + 0 + 1 + 1


def test_collated_positions_point_at_the_right_items():
    sequences = [np.array([10, 11, 12, 13]), np.array([11, 14, 10])]
    batch = SequenceCollator({})([TrainSequences(sequences, length=3)[i] for i in range(2)])
    items = batch.items.index
    for b, seq in enumerate(sequences):
        m = batch.history_mask[b]
        assert items[batch.history[b][m]].tolist() == seq[-4:-1].tolist()[-int(m.sum()) :]
        assert items[batch.targets[b][m]].tolist() == seq[1:].tolist()[-int(m.sum()) :]
    assert len(set(items.tolist())) == len(items) == 5


def test_sequence_training_needs_the_causal_history():
    with pytest.raises(ValueError, match="length >= 1"):
        TrainSequences([np.arange(3)], length=0)
    assert torch.equal(torch.as_tensor(TrainSequences([np.arange(3)], 5)[0][2][-2:]), torch.tensor([1, 2]))


def test_sequence_batch_pins_every_tensor(monkeypatch):
    sequences = [np.array([10, 11, 12, 13]), np.array([11, 14, 10])]
    batch = SequenceCollator({})([TrainSequences(sequences, length=3)[i] for i in range(2)])
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t) or t.clone())
    out = batch.pin_memory()
    tensors = [batch.user, batch.history, batch.history_mask, batch.targets, batch.items.index]
    assert len(pinned) == len(tensors) and all(any(p is t for p in pinned) for t in tensors)
    assert type(out) is type(batch) and torch.equal(out.targets, batch.targets)


def test_batches_are_cut_to_their_longest_window_and_keep_every_position():
    sequences = [np.array([10, 11, 12]), np.array([20, 21, 22, 23])]
    data = TrainSequences(sequences, length=50)
    batch = SequenceCollator({})([data[i] for i in range(2)])
    assert batch.history.shape == batch.targets.shape == batch.history_mask.shape == (2, 3)  # not (2, 50)
    items = batch.items.index
    assert items[batch.targets[1][batch.history_mask[1]]].tolist() == [21, 22, 23]
    assert items[batch.history[0][batch.history_mask[0]]].tolist() == [10, 11]
