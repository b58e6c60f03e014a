"""The Sven reproduction's equal-wall-time metric: each arm's validation MSE after its last
epoch completed within the shorter of the two training times."""

from optforge.repro.papers.sven import _equal_wall_time


def test_equal_wall_time_takes_each_arms_last_epoch_within_the_shorter_budget():
    sven = {"train_time_s": 3.0, "wall_s": [0.0, 1.0, 2.0, 3.0], "val_mse": [1.0, 0.1, 0.01, 1e-3]}
    adam = {"train_time_s": 1.2, "wall_s": [0.0, 0.4, 0.8, 1.2], "val_mse": [1.0, 0.5, 0.2, 0.05]}
    _equal_wall_time(sven, adam, "")
    assert sven["equal_wall_s"] == adam["equal_wall_s"] == 1.2
    assert sven["equal_wall_val_mse"] == 0.1  # Sven finished epoch 1 within 1.2 s
    assert adam["equal_wall_val_mse"] == 0.05  # Adam's whole run
    fast = {"f_train_time_s": 0.5, "f_wall_s": [0.0, 0.5], "f_val_mse": [1.0, 0.3]}
    slow = {"f_train_time_s": 2.0, "f_wall_s": [0.0, 2.0], "f_val_mse": [1.0, 0.2]}
    _equal_wall_time(slow, fast, "f_")
    assert slow["f_equal_wall_val_mse"] == 1.0  # no epoch of Sven fits in 0.5 s: the start
