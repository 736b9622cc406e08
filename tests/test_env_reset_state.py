"""Replaying an episode from a state: reset(seed=s, options={"reset_to_state": env.sim_state()})."""

import gymnasium as gym
import numpy as np
import pytest

import cfbench
from policies.interpolation import upsample

SEED = 20001
#: how closely a replay repeats the original (agent pose, sim_state), measured from every step
#: of the 2.5 and 20 Hz tracker on test seeds 20000-20009: ClampPassing exactly; PassagePassing
#: exactly but for the velocity after the final wall contact (1.5e-13); ButtonTouch's arm to
#: 1e-11 units, its link velocities to 1e-10 units/s and after the final contact to 4e-6
#: (pymunk warm-starts the pivot joints with impulses that are not in the state)
TOLERANCE = {"ClampPassing": (0.0, 0.0), "PassagePassing": (0.0, 1e-12), "ButtonTouch": (1e-9, 1e-4)}


def make(env_name, **kwargs):
    return gym.make(cfbench.ENV_IDS[env_name], **kwargs).unwrapped


def tracker_actions(env, source_hz):
    """The expert sampled at ``source_hz``, linearly interpolated to the control rate, then held."""
    env.reset(seed=SEED)
    coarse = env.expert_trajectory().sample(source_hz)
    fine = list(upsample(coarse[0], coarse[1:], source_hz, env.control_hz))
    return fine + fine[-1:] * env.max_episode_steps


def episode(env, actions, state=None):
    """(obs, reward, terminated, truncated, info) from the reset on, until the episode ends; each
    info with the env's ``sim_state()`` after that step."""
    obs, info = env.reset(seed=SEED, options=None if state is None else {"reset_to_state": state})
    steps = [(obs, 0.0, False, False, {**info, "sim_state": env.sim_state()})]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        steps.append((obs, reward, terminated, truncated, {**info, "sim_state": env.sim_state()}))
        if terminated or truncated:
            break
    return steps


def assert_same_steps(replay, original, env_name):
    pose_tol, state_tol = TOLERANCE[env_name]
    assert len(replay) == len(original)
    for (obs, reward, terminated, truncated, info), want in zip(replay, original):
        assert (reward, terminated, truncated) == want[1:4]
        assert info.keys() == want[4].keys()
        assert (info["is_success"], info["is_collision"], info["time"]) == (
            want[4]["is_success"], want[4]["is_collision"], want[4]["time"])
        np.testing.assert_allclose(info["agent_pose"], want[4]["agent_pose"], rtol=0, atol=pose_tol)
        np.testing.assert_allclose(info["sim_state"], want[4]["sim_state"], rtol=0, atol=state_tol)
        # float32: a pose off by 1e-11 may round one step the other way
        np.testing.assert_allclose(obs, want[0], rtol=0, atol=1e-4 if pose_tol else 0.0)


@pytest.mark.parametrize("source_hz, outcome", [(2.5, "is_collision"), (20.0, "is_success")])
def test_replay_from_a_state_repeats_the_rest_of_the_episode(env_name, source_hz, outcome):
    """A failure (2.5 Hz tracker) and a success (20 Hz), replayed from a third and two thirds in."""
    env = make(env_name)
    actions = tracker_actions(env, source_hz)
    original = episode(env, actions)
    assert original[-1][4][outcome]
    for k in range(len(original) - 1):  # from every state before the end
        replay = episode(env, actions[k:], original[k][4]["sim_state"])
        assert np.array_equal(replay[0][4]["sim_state"], original[k][4]["sim_state"]), "the state round-trips"
        assert_same_steps(replay, original[k:], env_name)
    env.close()


def test_the_velocity_in_the_state_matters(env_name):
    """The comparison above can fail: the same pose at rest replays differently."""
    env = make(env_name)
    actions = tracker_actions(env, 20.0)
    original = episode(env, actions)
    k = len(original) // 3
    state = original[k][4]["sim_state"].copy()
    moving = [i for i, name in enumerate(env.sim_state_names) if name.rsplit("_", 1)[-1].startswith("v")]
    assert len(moving) == env.pose_dim + (4 if env_name == "ButtonTouch" else 0)
    state[moving] = 0.0
    replay = episode(env, actions[k:], state)
    assert np.abs(replay[1][4]["agent_pose"] - original[k + 1][4]["agent_pose"]).max() > 0.1
    env.close()


def test_the_state_carries_the_episode_time(env_name):
    """Restarted three control steps before the time limit, holding still truncates after three."""
    env = make(env_name, control_hz=10)
    env.reset(seed=SEED)
    state = env.sim_state()
    state[-1] = (env.max_episode_steps - 3) / env.control_hz
    _, info = env.reset(seed=SEED, options={"reset_to_state": state})
    for _ in range(3):
        _, _, terminated, truncated, info = env.step(info["agent_pose"])
        assert not terminated
    assert truncated and info["time"] == pytest.approx(env.max_episode_seconds)


def test_no_state_or_none_is_the_scenes_start(env_name):
    env = make(env_name)
    start, _ = env.reset(seed=SEED)
    state = env.sim_state()
    again, _ = env.reset(seed=SEED, options={"reset_to_state": None})
    np.testing.assert_array_equal(start, again)
    np.testing.assert_array_equal(state, env.sim_state())


def _entry(state, index, value):
    state = state.copy()
    state[index] = value
    return state


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda s, env: s[:-1], r"must have shape \(\d+,\), entries \("),
        (lambda s, env: np.concatenate([s, s]), "must have shape"),
        (lambda s, env: "start", "not a vector of numbers"),
        (lambda s, env: _entry(s, 0, np.nan), "is nan, not a finite number"),
        (lambda s, env: _entry(s, env.pose_dim, np.inf), "is inf, not a finite number"),
        (lambda s, env: _entry(s, 0, 600.0), r"x = 600 is outside \[0, 512\]"),
        (lambda s, env: _entry(s, -1, -0.05), r"time = -0.05 is outside \[0, "),
        (lambda s, env: _entry(s, -1, env.max_episode_seconds + 1), "time = .* is outside"),
        (lambda s, env: _entry(s, -1, 0.01), "time = 0.01 s is not a whole number of 20 Hz control steps"),
    ],
)
def test_bad_states_are_refused_and_the_episode_goes_on(env_name, bad, message):
    env = make(env_name)
    _, info = env.reset(seed=SEED)
    state = env.sim_state()
    env.step(info["agent_pose"])
    with pytest.raises(ValueError, match=message):
        env.reset(seed=SEED, options={"reset_to_state": bad(state, env)})
    assert env.step(info["agent_pose"])[4]["time"] == 2 / env.control_hz


def test_reset_options_are_checked(env_name):
    env = make(env_name)
    env.reset(seed=SEED)
    state = env.sim_state()
    with pytest.raises(ValueError, match=r"unknown options \['start_pose'\]; known: \['reset_to_state'\]"):
        env.reset(seed=SEED, options={"start_pose": [0, 0], "reset_to_state": state})
    with pytest.raises(ValueError, match="reset_to_state needs the seed"):
        env.reset(options={"reset_to_state": state})


def test_states_the_physics_cannot_take_are_refused():
    arm = make("ButtonTouch")
    arm.reset(seed=SEED)
    state = arm.sim_state()
    fore_x = arm.sim_state_names.index("fore_x")
    apart = _entry(state, fore_x, state[fore_x] + 10.0)
    with pytest.raises(ValueError, match="the links are 10 units apart at the elbow"):
        arm.reset(seed=SEED, options={"reset_to_state": apart})
    clamp = make("ClampPassing")
    clamp.reset(seed=SEED)
    state = clamp.sim_state()
    half = _entry(state, clamp.sim_state_names.index("threaded"), 0.5)
    with pytest.raises(ValueError, match="threaded = 0.5 must be 0 or 1"):
        clamp.reset(seed=SEED, options={"reset_to_state": half})
    clamp.close()


def test_a_vector_envs_states_replay_in_a_single_env():
    """``envs.call("sim_state")`` gives each sub-env's state; one replays in a plain env."""
    envs = gym.make_vec(cfbench.ENV_IDS["PassagePassing"], num_envs=2, vectorization_mode="sync")
    _, info = envs.reset(seed=[SEED, SEED + 1])
    _, _, _, _, info = envs.step(info["agent_pose"] + 5.0)
    states = envs.call("sim_state")
    env = make("PassagePassing")
    env.reset(seed=SEED + 1, options={"reset_to_state": states[1]})
    np.testing.assert_array_equal(env.sim_state(), states[1])
    np.testing.assert_array_equal(states[1][:2], info["agent_pose"][1])  # x, y come first
    envs.close()
