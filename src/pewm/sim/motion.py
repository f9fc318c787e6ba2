"""One step of agent motion with collisions: the single rule the simulator and the planners share."""

from __future__ import annotations

from pewm.geometry import Action, ActionConfig, AgentState, apply_action
from pewm.sim.freespace import FreeSpaceGrid


def move(state: AgentState, action: int, free_space: FreeSpaceGrid, cfg: ActionConfig = ActionConfig()) -> tuple[AgentState, bool]:
    """Apply ``action``; a forward move that would leave free space is not executed.

    Returns ``(new_state, collided)``. Turns never collide (the agent is a disc).
    """
    nxt = apply_action(state, action, cfg)
    if Action(int(action)) == Action.FORWARD and not free_space.segment_is_free(state.x, state.y, nxt.x, nxt.y):
        return state, True
    return nxt, False
