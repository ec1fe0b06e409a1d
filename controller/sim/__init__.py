"""The simulator: what PoolPilot would do and cost on real traffic, against baselines and a hindsight bound.

``poolpilot simulate POOL.yaml`` drives the operator's own decision core (``controller.core.plan.plan``,
``controller.router.picking.route``) with simulated observations and a simulated clock; nothing here
makes a second copy of a decision. The models it adds (a vLLM replica, traces, spot reclaims, the hosted
API) are small, and each says where its figures come from.
"""
