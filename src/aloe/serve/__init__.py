"""The policy server: a run's policy over openpi's websocket protocol, and the recording
extension that stores a robot's episodes as in-process collection does.

`aloe.serve.protocol` documents the messages; `wire` is the codec; `server` the websocket
side; `policy` what is served and swapped; `episodes` the recording. `aloe.robot` is the
client side. Needs the `serve` extra (websockets, msgpack).
"""
