"""What every RealSense camera shares: opening the device (live by serial, or a recording), its
sensor callbacks, the capture thread's life cycle, and the connection status.

The SDK delivers frames through sensor callbacks (no rs.pipeline: it cannot open software devices,
and sensor-level streaming is what lets a live camera record through the SDK's recorder). Two kinds
of camera read what the callbacks queue: `StreamingRealSense` (a live camera, or a recording played
at its recorded pace: the newest frame wins) and `SteppedPlayback` (a recording, frame by frame);
`rdvla.devices.cameras.realsense.open_realsense` picks the one a config asks for.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from abc import abstractmethod
from types import ModuleType
from typing import Any, Callable, Optional

from rdvla.devices.cameras.base import (
    Camera,
    CameraConnection,
    CameraDisconnectedError,
    CameraEndedError,
    CameraError,
    CameraNotFoundError,
    CameraStatus,
    Clock,
    Frame,
)
from rdvla.devices.cameras.realsense.config import RealSenseCameraConfig
from rdvla.devices.cameras.realsense.profiles import apply_exposure, describe_profile, select_profiles
from rdvla.devices.cameras.realsense.sdk import camera_info, check_record_path, import_rs, load_recording, one_line
from rdvla.devices.cameras.realsense.session import Composer, RawFrame, Session, convert

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often the capture thread looks at the clock while no frame arrives

DeviceFinder = Callable[[str], Any]


class RealSenseCamera(Camera):
    """A RealSense colour (+ aligned depth) camera; subclasses decide how frames are read."""

    # Raw frames kept per stream between reads; None keeps every frame (frame-by-frame playback).
    queue_limit: Optional[int] = None

    def __init__(self, config: RealSenseCameraConfig, *, clock: Clock = time.monotonic,
                 device_finder: Optional[DeviceFinder] = None) -> None:
        super().__init__(config.name, config.role, clock)
        self.config = config
        self._finder = device_finder
        self._rs: Optional[ModuleType] = None
        self._context: Optional[Any] = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._session: Optional[Session] = None
        self._connection = CameraConnection.DISCONNECTED
        self._frames_received = 0
        self._attempts = 0  # reconnection attempts since the stream was last healthy
        self._last_error: Optional[str] = None
        self._recordings = 0  # files started by record_to

    @property
    def connection(self) -> CameraConnection:
        return self._connection

    def status(self) -> CameraStatus:
        with self._cond:
            return CameraStatus(self._connection, self._frames_received, self._attempts, self._last_error)

    def _set_connection(self, connection: CameraConnection, error: Optional[str] = None) -> None:
        with self._cond:
            if connection != self._connection:
                log.info("camera %s: %s -> %s%s", self.name, self._connection.value, connection.value, f" ({error})" if error else "")
            self._connection = connection
            if error is not None:
                self._last_error = error
            self._cond.notify_all()

    # ----- opening and closing the device -------------------------------------------------------

    def _find_device(self, serial: str) -> Any:
        if self._finder is not None:
            return self._finder(serial)
        assert self._rs is not None and self._context is not None
        devices = self._context.query_devices()
        serials = []
        for device in devices:
            found = camera_info(self._rs, device, "serial_number", "")
            if found == serial:
                return device
            serials.append(found)
        raise CameraNotFoundError(
            f"no RealSense camera with serial {serial}; connected: {', '.join(serials) if serials else 'none'}"
        )

    def _open_session(self) -> Session:
        rs = self._rs
        assert rs is not None and self._context is not None
        cfg = self.config
        try:
            if cfg.recording is not None:
                device = load_recording(rs, self._context, cfg.recording)
                return self._start_session(rs, device, device.as_playback())
            assert cfg.serial is not None
            return self._start_session(rs, self._find_device(cfg.serial), None)
        except RuntimeError as exc:
            if isinstance(exc, CameraError):
                raise
            raise CameraError(f"camera {self.name}: cannot start streaming: {one_line(exc)}") from exc

    def _start_session(self, rs: ModuleType, device: Any, playback: Optional[Any]) -> Session:
        cfg = self.config
        selection = select_profiles(device, self.name, cfg.width, cfg.height, cfg.fps, cfg.depth, playback is not None)
        sensors = device.query_sensors()
        if cfg.exposure is not None:
            if playback is None:
                apply_exposure(rs, sensors[selection.color[0]], self.name, cfg.exposure)
            else:
                log.debug("camera %s: exposure is fixed in a recording; ignoring exposure=%s", self.name, cfg.exposure)
        recorder = None
        if cfg.record_to is not None:
            target = check_record_path(cfg.record_to)
            if self._recordings:  # after a reconnection: a new part, never over the earlier frames
                target = target.with_name(f"{target.stem}.part{self._recordings}{target.suffix}")
            recorder = rs.recorder(str(target), device)
            self._recordings += 1
            sensors = recorder.query_sensors()  # frames must pass through the recorder's sensors to be written
        chosen: dict[int, list[Any]] = collections.defaultdict(list)
        for index, profile in filter(None, (selection.color, selection.depth)):
            chosen[index].append(profile)
        depth_scale = 0.0
        if selection.depth is not None:
            depth_sensor = sensors[selection.depth[0]]
            depth_scale = depth_sensor.get_option(rs.option.depth_units) if depth_sensor.supports(rs.option.depth_units) else 0.001
        color = describe_profile(selection.color[1])
        session = Session(
            device=device,
            sensors=[sensors[i] for i in chosen],
            playback=playback,
            recorder=recorder,
            depth_scale=float(depth_scale),
            bgr=color.format == "bgr8",
            tolerance_ms=500.0 / color.fps,
            depths=collections.deque() if selection.depth is not None else None,
        )
        if selection.depth is not None and self.config.align_depth:
            session.align = rs.align(rs.stream.color)
            session.composer = Composer(rs)
        if playback is not None:
            playback.set_real_time(self.config.real_time)
            playback.pause()  # start every sensor before the file runs, or the first frames go to nobody
            playback.set_status_changed_callback(self._status_callback(session))
        callback = self._frame_callback(session)
        started = []
        try:
            for index, profiles in chosen.items():
                sensor = sensors[index]
                sensor.open(profiles if len(profiles) > 1 else profiles[0])
                sensor.start(callback)
                started.append(sensor)
        except RuntimeError:
            self._release(session, started)
            raise
        if playback is not None:
            playback.resume()
        log.info(
            "camera %s: streaming %s%s%s",
            self.name,
            color,
            f" + {describe_profile(selection.depth[1])}" if selection.depth else "",
            f", recording to {target}" if recorder is not None else "",
        )
        return session

    def _frame_callback(self, session: Session) -> Callable[[Any], None]:
        # Runs on SDK threads: never block, never raise.
        limit = self.queue_limit

        def on_frame(frame: Any) -> None:
            try:
                frame.keep()
                raw = RawFrame(self.clock(), frame.get_timestamp(), frame)
                is_depth = frame.profile.stream_type().name == "depth"
            except RuntimeError as exc:
                log.warning("camera %s: unreadable frame dropped: %s", self.name, one_line(exc))
                return
            with self._cond:
                if session.closed:
                    return
                queue = session.depths if is_depth else session.colors
                if queue is None:
                    return
                queue.append(raw)
                if limit is not None and len(queue) > limit:
                    queue.popleft()
                self._cond.notify_all()

        return on_frame

    def _status_callback(self, session: Session) -> Callable[[Any], None]:
        rs = self._rs
        assert rs is not None

        def on_status(status: Any) -> None:
            if status == rs.playback_status.stopped:
                with self._cond:
                    session.stopped = True
                    self._cond.notify_all()

        return on_status

    def _release(self, session: Session, sensors: list[Any]) -> None:
        with self._cond:
            session.closed = True
        for sensor in sensors:
            for action in (sensor.stop, sensor.close):
                try:
                    action()
                except RuntimeError as exc:  # an unplugged camera refuses politely or not at all
                    log.debug("camera %s: %s failed while closing: %s", self.name, action.__name__, one_line(exc))
        with self._cond:
            session.colors.clear()
            if session.depths is not None:
                session.depths.clear()
        # The SDK finishes a recording file only when nothing references the recorder or its sensors.
        session.sensors.clear()
        session.recorder = session.device = session.playback = session.align = session.composer = None

    def _close_session(self) -> None:
        with self._cond:
            session, self._session = self._session, None
        if session is not None:
            self._release(session, list(session.sensors))

    def _frame(self, session: Session, color: RawFrame, depth: Optional[RawFrame], host_time_s: float) -> Frame:
        return convert(session, color, depth, host_time_s, self.name)

    # ----- public life cycle ----------------------------------------------------------------------

    def connect(self) -> None:
        if self._connection in (CameraConnection.STREAMING, CameraConnection.RECONNECTING):
            return
        if self._connection != CameraConnection.DISCONNECTED:  # ended or failed: start over
            self.disconnect()
        self._rs = import_rs()
        self._context = self._context or self._rs.context()
        self._stop.clear()
        session = self._open_session()
        with self._cond:
            self._session = session
            self._attempts = 0
            self._last_error = None
            self._on_connected()
        self._set_connection(CameraConnection.STREAMING)
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.error("camera %s: capture thread did not stop within 5 s", self.name)
            self._thread = None
        self._close_session()
        self._set_connection(CameraConnection.DISCONNECTED)

    def _run(self) -> None:
        try:
            self._work()
        except Exception as exc:  # a dead thread must show up as a connection status, not as silence
            log.exception("camera %s: capture thread failed", self.name)
            self._set_connection(CameraConnection.FAILED, one_line(exc))

    def _on_connected(self) -> None:
        """Reset what a kind of camera keeps between reads (called with the lock held)."""

    @abstractmethod
    def _work(self) -> None:
        """The background thread's job while connected."""

    def _check_streaming(self) -> None:
        connection = self._connection
        if connection == CameraConnection.STREAMING:
            return
        if connection == CameraConnection.ENDED:
            raise CameraEndedError(f"camera {self.name}: the recording has no more frames")
        detail = f" ({self._last_error})" if self._last_error else ""
        if connection == CameraConnection.RECONNECTING:
            raise CameraDisconnectedError(
                f"camera {self.name} is disconnected, reconnecting (attempt {self._attempts}){detail}"
            )
        raise CameraDisconnectedError(f"camera {self.name} is {connection.value}{detail}")
