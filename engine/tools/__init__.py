"""What training, evaluation and long-run checks use; a robot running sam2_ros runs none of it.

* ``synthetic``: seeded synthetic camera scenes with exact ground-truth masks (training data,
  benchmark clips, the demo's built-in camera);
* ``train``: training the bundled compact model on that world;
* ``metrics``: DAVIS J, F and presence accuracy;
* ``soak``: a long stream through the tracker, memory and time per frame.

Speed and quality benchmarks live in ``engine/benchmarks/``.
"""
