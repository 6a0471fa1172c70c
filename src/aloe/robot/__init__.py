"""The robot's side of `aloe serve`: `RobotClient` (a remote `ChunkPolicy` executed
asynchronously, optionally with real-time chunking), its `Connection`, and `Teleop` for the
person watching. `aloe robot` runs MetaWorld as the robot (`aloe.robot.sim`), or a LeRobot
robot with its teleoperator (`aloe.robot.lerobot_env`, `aloe.robot.lerobot_devices`); both
keep a robot's control rate on deadlines (`aloe.robot.pacing`).
"""
