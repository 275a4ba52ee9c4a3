"""What counts as a number or an array (effdyn._checks, module notes): one rule per test,
through the public entry points, and a property test over the checkers."""

from __future__ import annotations

import numbers
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import effdyn as ed
from effdyn import _checks as v

P = ed.problems
MV = P.MinimalValley()


@pytest.fixture(autouse=True)
def _no_numpy_warnings():
    # a refused value must be refused by us, not half-converted with a NumPy warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- accepted ------------------------------------------------------------------------------------

def test_numpy_scalars_and_0d_arrays_are_numbers():
    traj = ed.gd(MV, np.array([0.1, 3.0]), np.float64(0.3), np.int64(5), n_eigs=np.array(2))
    assert traj.eta == 0.3 and traj.steps == 5 and traj.eigs.shape == (6, 2)
    assert type(traj.eta) is float
    p = P.MinimalValley(zeta=np.array(1.0), eps=np.float32(0.25))
    assert (p.zeta, p.eps) == (1.0, 0.25) and type(p.eps) is float
    assert P.ScalarProduct(np.uint8(3), target=Fraction(1, 2)).depth == 3
    assert v.positive_int(np.array(4, dtype=np.int16), "n") == 4 and type(v.positive_int(np.int64(4), "n")) is int
    sol = ed.solve(ed.models.GradientFlow(MV, np.array(0.3)), [0.1, 3.0], np.int32(4), solver="map")
    assert sol.k[-1] == 4


def test_object_arrays_of_real_numbers_are_arrays():
    theta = v.as_vector(np.array([0.1, Fraction(3)], dtype=object), "theta0")
    assert theta.dtype == np.float64 and theta.tolist() == [0.1, 3.0]


# --- refused -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [2.0, np.float64(2.0), np.array(2.0), 2.5])
def test_count_arguments_refuse_floats_even_whole(value):
    with pytest.raises(TypeError, match="`n_eigs` must be an integer >= 1") as info:
        ed.gd(MV, [0.1, 3.0], 0.3, 5, n_eigs=value)
    if float(value) == 2.0:
        assert "int(" in str(info.value)  # says how to fix it


@pytest.mark.parametrize("value", [4, 4.0, np.float64(4.0), np.array(4.0), np.int32(4), 4e0])
def test_horizons_take_whole_floats_in_gd_and_solve_alike(value):
    # one rule for `steps` (a horizon, not a count): gd and solve accept 1e4 alike
    assert ed.gd(MV, [0.1, 3.0], 0.3, value).steps == 4
    assert ed.solve(ed.models.GradientFlow(MV, 0.3), [0.1, 3.0], value, solver="map").k[-1] == 4
    with pytest.raises(ValueError, match="`steps` must be a whole number of GD steps"):
        ed.gd(MV, [0.1, 3.0], 0.3, 4.5)


@pytest.mark.parametrize("call, arg", [
    (lambda: P.Quadratic(np.eye(2) * (1 + 0j)), "A"),
    (lambda: P.Quadratic(np.eye(2), b=[1j, 0]), "b"),
    (lambda: P.DeepMatrixFactorization(2, 3, np.diag([5.5, 1.0]) + 1e-3j), "target"),
    (lambda: ed.gd(MV, np.array([0.1, 3.0], dtype=complex), 0.3, 5), "theta0"),
    (lambda: ed.gd(MV, [0.1, 3.0], 0.3 + 0j, 5), "eta"),
    (lambda: ed.gd(MV, [0.1, 3.0], np.array(0.3 + 0j), 5), "eta"),
    (lambda: MV.grad(np.array([0.1, 3.0 + 1e-9j])), "theta"),
])
def test_complex_input_is_refused(call, arg):
    with pytest.raises(TypeError, match=f"`{arg}`.*complex"):
        call()


@pytest.mark.parametrize("call, arg", [
    (lambda: ed.gd(MV, ["0.1", "3"], 0.3, 5), "theta0"),
    (lambda: ed.gd(MV, np.array(["0.1", "3"]), 0.3, 5), "theta0"),
    (lambda: ed.gd(MV, [0.1, 3.0], "0.3", 5), "eta"),
    (lambda: ed.gd(MV, [0.1, 3.0], np.array("0.3"), 5), "eta"),
    (lambda: ed.gd(MV, [0.1, 3.0], 0.3, "5"), "steps"),
    (lambda: P.Quadratic([["1", "0"], ["0", "1"]]), "A"),
    (lambda: P.MinimalValley(eps=b"0.01"), "eps"),
])
def test_text_is_not_parsed_as_numbers(call, arg):
    with pytest.raises(TypeError, match=f"`{arg}`.*text"):
        call()


@pytest.mark.parametrize("call, arg", [
    (lambda: ed.gd(MV, [0.1, 3.0], True, 5), "eta"),
    (lambda: ed.gd(MV, [0.1, 3.0], 0.3, np.True_), "steps"),
    (lambda: ed.gd(MV, [True, False], 0.3, 5), "theta0"),
    (lambda: P.ScalarProduct(3).init(np.array(True)), "seed"),
])
def test_booleans_are_not_numbers(call, arg):
    with pytest.raises(TypeError, match=f"`{arg}`.*boolean"):
        call()


@pytest.mark.parametrize("value", [[[0.1, 3.0], [1.0]], [0.1, None], np.array([0.1, "3"], dtype=object),
                                   [0.1, [3.0]], {"x": 0.1}, np.array([1.0])[0:0].reshape(0, 1)])
def test_malformed_arrays_are_refused(value):
    with pytest.raises((TypeError, ValueError), match="`theta0`"):
        ed.gd(MV, value, 0.3, 5)


def test_a_one_element_array_is_not_a_number():
    with pytest.raises(TypeError, match="`eta`.*shape \\(1,\\)"):
        ed.gd(MV, [0.1, 3.0], np.array([0.3]), 5)


def test_choice_with_an_array_names_the_argument():
    # compared element-wise, an array would raise NumPy's "truth value is ambiguous"
    with pytest.raises(ValueError, match="`closure`"):
        ed.models.FreeEnergyFlow(MV, 0.3, closure=np.array(["chord", "chord"]))


def test_minimal_valley_init_seed():
    base = np.array([0.1, 3.0])
    assert np.array_equal(MV.init(), base) and np.array_equal(MV.init(7), base)  # the benchmark start
    a, b, c = MV.init(7, perturb=0.01), MV.init(7, perturb=0.01), MV.init(8, perturb=0.01)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0 < np.linalg.norm(a - base) < 0.1
    with pytest.raises(ValueError, match="`seed`"):
        MV.init(-1)
    with pytest.raises(ValueError, match="`perturb`"):
        MV.init(0, perturb=-1.0)


# --- property test over the checkers -------------------------------------------------------------

def _zero_d(strategy):
    return strategy.map(np.array)


values = st.one_of(
    st.integers(-(10**20), 10**20), st.floats(), st.booleans(), st.complex_numbers(), st.text(max_size=4),
    st.binary(max_size=3), st.none(),
    st.integers(-(2**63), 2**63 - 1).map(np.int64), st.floats(width=32).map(np.float32), st.floats().map(np.float64),
    st.booleans().map(np.bool_), st.complex_numbers().map(np.complex128),
    _zero_d(st.integers(-(2**31), 2**31)), _zero_d(st.floats()), _zero_d(st.booleans()), _zero_d(st.text(max_size=3)),
    _zero_d(st.complex_numbers()),
    st.lists(st.floats(), max_size=3), st.lists(st.lists(st.integers(), max_size=2), max_size=2),
    st.lists(st.one_of(st.floats(), st.text(max_size=2), st.none()), max_size=3).map(lambda x: np.array(x, dtype=object)),
    st.fractions(),
)


def _kind(x):
    """'int', 'float' or None (not a number) under the module's rules."""
    if isinstance(x, (bool, np.bool_)):
        return None
    if isinstance(x, np.ndarray):
        if x.ndim != 0:
            return None
        return {"i": "int", "u": "int", "f": "float"}.get(x.dtype.kind)
    if isinstance(x, numbers.Integral):
        return "int"
    if isinstance(x, numbers.Real):
        return "float"
    return None


@settings(max_examples=400)
@given(values)
@example(np.array(3.0))
@example(np.float64(3.0))
@example(10**400)
def test_scalar_checkers_follow_the_rules(x):
    kind = _kind(x)
    for check, want, ok in ((v.positive_float, ("int", "float"), lambda r: np.isfinite(r) and r > 0),
                            (v.real_float, ("int", "float"), lambda r: np.isfinite(r)),
                            (v.positive_int, ("int",), lambda r: r >= 1),
                            (v.nonneg_int, ("int",), lambda r: r >= 0)):
        try:
            out = check(x, "arg")
        except TypeError as exc:
            assert "`arg`" in str(exc) and kind not in want, (check.__name__, x)
            continue
        except ValueError as exc:
            assert "`arg`" in str(exc) and kind in want, (check.__name__, x)
            continue
        assert kind in want, (check.__name__, x, out)
        assert type(out) is (int if want == ("int",) else float) and ok(out)
        if want == ("int",):
            assert out == int(x)
        else:
            assert out == float(x)


@settings(max_examples=300)
@given(st.one_of(values, st.lists(values, max_size=3)))
def test_as_vector_accepts_exactly_regular_real_vectors(x):
    try:
        out = v.as_vector(x, "theta0")
    except (TypeError, ValueError) as exc:
        assert "`theta0`" in str(exc)
        return
    assert out.dtype == np.float64 and out.ndim == 1 and np.all(np.isfinite(out))
    items = list(x) if not isinstance(x, np.ndarray) else list(x.ravel())
    assert all(_kind(e if not isinstance(e, np.ndarray) else e) in ("int", "float") for e in items), x
    np.testing.assert_array_equal(out, np.array([float(e) for e in items]))
