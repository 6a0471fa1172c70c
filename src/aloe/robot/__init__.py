"""The robot's side of `aloe serve`: `RobotClient` (a remote `ChunkPolicy` executed
asynchronously, optionally with real-time chunking), its `Connection`, and `Teleop` for the
person watching. `aloe robot` runs MetaWorld as the robot (`aloe.robot.sim`).
"""
