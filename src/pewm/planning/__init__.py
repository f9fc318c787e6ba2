"""Planning with the world model toward goal images (arXiv 2505.05495, §4.2 Table 2, §5.1 Fig. 6a).

* :mod:`pewm.planning.tasks` -- goal-reaching tasks (goal beyond view, 1-4 m away), scoring, JSON;
* :mod:`pewm.planning.worlds` -- what planners imagine through: the world model (with or without
  memory) or the simulator (oracle), and real execution;
* :mod:`pewm.planning.proposals`, :mod:`pewm.planning.costs`, :mod:`pewm.planning.planners` --
  candidate sequences, goal costs, ranking and the cross-entropy method;
* :mod:`pewm.planning.episode`, :mod:`pewm.planning.metrics`, :mod:`pewm.planning.benchmark` --
  model-predictive control episodes, their metrics and ``pewm plan``.
"""

from pewm.planning.tasks import (  # noqa: F401
    GoalTask,
    TaskConfig,
    TaskFrames,
    goal_visible_fraction,
    is_success,
    load_task_frames,
    make_tasks,
    path_length_m,
    pose_error,
    read_tasks,
    write_tasks,
)
from pewm.planning.worlds import (  # noqa: F401
    Executed,
    Frame,
    Imagined,
    MapOnlyWorld,
    ModelWorld,
    SimulatorWorld,
    World,
    execute,
    state_of_pose,
)
from pewm.planning.proposals import ActionPrior, fit_prior_from_dataset, uniform_proposals  # noqa: F401
from pewm.planning.costs import COSTS, DINOv2Cost, GoalCost, LatentCost, PixelCost, SSIMDepthCost, make_cost  # noqa: F401
from pewm.planning.planners import (  # noqa: F401
    PROPOSALS,
    Budget,
    CEMConfig,
    Decision,
    RankConfig,
    StopRule,
    cem,
    make_proposals,
    random_choice,
    rank,
    shift_probs,
)
from pewm.planning.metrics import episode_metrics, sim_score, spl  # noqa: F401
from pewm.planning.episode import Blind, EpisodeResult, run_episode  # noqa: F401
from pewm.planning.benchmark import PlanConfig, Row, rows_of, run_plan_benchmark  # noqa: F401
