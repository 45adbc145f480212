"""Scheduling passes over the op DAG: streams, launch order, waits and the makespan simulator."""
from oparac.schedule.costs import Costs
from oparac.schedule.order import ORDER_ALGORITHMS, order_launches
from oparac.schedule.simulate import Simulation, bottom_levels, critical_path, simulate
from oparac.schedule.streams import STREAM_ALGORITHMS, StreamAssignment, assign_streams
from oparac.schedule.waits import reduce_waits

__all__ = ["Costs", "ORDER_ALGORITHMS", "STREAM_ALGORITHMS", "Simulation", "StreamAssignment", "assign_streams",
           "bottom_levels", "critical_path", "order_launches", "reduce_waits", "simulate"]
