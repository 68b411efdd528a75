"""Auto CPU threads: one per idle core, never fewer than one, the user's choice wins."""

from lib.training.threads import auto_threads, choose_threads


def test_auto_threads_leaves_busy_cores_alone():
    assert auto_threads(cores=2, load=0.1) == 2       # idle box: every core
    assert auto_threads(cores=2, load=7.0) == 1       # shared box: one thread, not two
    assert auto_threads(cores=2, load=1.0) == 1       # another job holds a core
    assert auto_threads(cores=16, load=3.2) == 13
    assert auto_threads(cores=4, load=40.0) == 1      # never zero
    assert auto_threads(cores=8, load=-1.0) == 8      # a nonsense load is not a bonus


def test_choose_threads_user_choice_and_devices():
    assert choose_threads(3, "cpu")[0] == 3
    assert choose_threads(3, "cuda")[0] == 3
    assert choose_threads(0, "cuda") == (None, "")
    n, line = choose_threads(0, "cpu")
    assert 1 <= n and line.startswith(f"CPU threads: {n} (auto: ")
