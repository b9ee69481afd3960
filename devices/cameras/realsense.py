"""Intel RealSense cameras through pyrealsense2: a live camera by serial, or a recording in its place.

One class serves both. The SDK delivers frames through sensor callbacks (no rs.pipeline: it cannot
open software devices, and sensor-level streaming is what lets a live camera record through the
SDK's recorder). Colour and depth frames are paired here by device timestamp, then depth is
aligned to colour with rs.align.

Three ways of running:
* live: a capture thread keeps the newest frame; frame silence beyond ``frame_timeout_s`` means the
  camera is gone, and it reopens the device by serial with exponential backoff (connection RECONNECTING);
* recording, ``real_time=True``: the file plays at its recorded pace and behaves like a live camera;
* recording, ``real_time=False``: frame by frame; every read returns the next recorded frame, so two
  runs over one file see the same frames. The file stays paused until every sensor has started
  (or its first frames would go to nobody), and is paused again whenever the reader falls behind.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Deque, Optional

import numpy as np

from rdvla.devices.cameras.base import (
    Camera,
    CameraDisconnectedError,
    CameraEndedError,
    CameraError,
    CameraNotFoundError,
    CameraConnection,
    CameraStatus,
    CameraTimeoutError,
    Clock,
    Frame,
    StaleFrameError,
    UnsupportedProfileError,
)
from rdvla.devices.cameras.sdk import camera_info, check_record_path, import_rs, load_recording, one_line

log = logging.getLogger(__name__)

DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_FPS = 640, 480, 30
COLOR_FORMATS = ("rgb8", "bgr8")  # preferred first
POLL_S = 0.05  # how often the capture thread looks at the clock while no frame arrives
FIRST_FRAME_TIMEOUT_S = 5.0  # a camera just opened may take this long to start (auto exposure, USB)
LIVE_QUEUE = 4  # raw frames kept per stream while live: only the newest matter
# Frame-by-frame playback: pause the file when this many framesets wait unread, resume below LOW.
PLAYBACK_HIGH, PLAYBACK_LOW = 16, 4


@dataclass(frozen=True)
class RealSenseCameraConfig:
    serial: Optional[str] = None  # live camera to open
    recording: Optional[str] = None  # play this .db3/.bag instead of a live camera
    role: str = "third_person"
    width: Optional[int] = None  # None: 640x480 live, the recorded size in playback
    height: Optional[int] = None
    fps: Optional[int] = None  # None: 30 live, the recorded rate in playback
    depth: bool = False
    align_depth: bool = True  # depth resampled onto the colour image
    exposure: Optional[float] = None  # colour exposure in the sensor's units; None keeps auto exposure
    real_time: bool = True  # playback only: recorded pace (True) or frame by frame (False)
    record_to: Optional[str] = None  # live only: also record the streams with the SDK recorder
    frame_timeout_s: float = 1.0  # live: this long without a frame means disconnected (first frame: 5 s)
    reconnect_initial_s: float = 0.1
    reconnect_max_s: float = 2.0

    def __post_init__(self) -> None:
        if (self.serial is None) == (self.recording is None):
            raise ValueError("a camera needs exactly one of serial (live) or recording (playback)")
        if self.record_to is not None and self.recording is not None:
            raise ValueError("record_to applies to live cameras, not to playback of a recording")
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither")
        for name in ("width", "height", "fps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.frame_timeout_s <= 0 or self.reconnect_initial_s <= 0 or self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("timeouts must be positive and reconnect_max_s >= reconnect_initial_s")

    @property
    def name(self) -> str:
        return self.serial if self.serial is not None else Path(str(self.recording)).name


@dataclass(frozen=True)
class CameraInfo:
    serial: str
    name: str
    firmware: str
    usb_type: str
    product_line: str


@dataclass(frozen=True)
class StreamProfile:
    stream: str  # "color" or "depth"
    format: str
    width: int
    height: int
    fps: int

    def __str__(self) -> str:
        return f"{self.stream} {self.width}x{self.height}@{self.fps} {self.format}"


def find_cameras() -> list[CameraInfo]:
    """Every connected RealSense; an empty list when there is none."""
    rs = import_rs()
    found = []
    for device in rs.context().query_devices():
        found.append(
            CameraInfo(
                serial=camera_info(rs, device, "serial_number"),
                name=camera_info(rs, device, "name"),
                firmware=camera_info(rs, device, "firmware_version"),
                usb_type=camera_info(rs, device, "usb_type_descriptor"),
                product_line=camera_info(rs, device, "product_line"),
            )
        )
    return found


def describe_profile(profile: Any) -> StreamProfile:
    video = profile.as_video_stream_profile()
    return StreamProfile(profile.stream_type().name, profile.format().name, video.width(), video.height(), profile.fps())


def video_profiles(device: Any) -> list[tuple[int, Any]]:
    """(sensor index, profile) for every colour and depth video profile the device offers."""
    out = []
    for index, sensor in enumerate(device.query_sensors()):
        for profile in sensor.get_stream_profiles():
            if profile.is_video_stream_profile() and profile.stream_type().name in ("color", "depth"):
                out.append((index, profile))
    return out


def _offered(profiles: list[tuple[int, Any]], stream: str, formats: tuple[str, ...]) -> str:
    by_size: dict[tuple[int, int, str], set[int]] = collections.defaultdict(set)
    for _, profile in profiles:
        p = describe_profile(profile)
        if p.stream == stream and p.format in formats:
            by_size[(p.width, p.height, p.format)].add(p.fps)
    if not by_size:
        return "none"
    return ", ".join(
        f"{w}x{h}@{'/'.join(str(f) for f in sorted(fps))} {fmt}" for (w, h, fmt), fps in sorted(by_size.items())
    )


@dataclass(frozen=True)
class ProfileSelection:
    color: tuple[int, Any]  # (sensor index, profile)
    depth: Optional[tuple[int, Any]]


def select_profiles(
    device: Any, name: str, width: Optional[int], height: Optional[int], fps: Optional[int], depth: bool, recorded: bool
) -> ProfileSelection:
    """Pick the colour (and depth) profiles matching the request; the error lists what is offered."""
    profiles = video_profiles(device)

    def matches(profile: Any, stream: str, formats: tuple[str, ...], size: Optional[tuple[int, int]], rate: Optional[int]) -> bool:
        p = describe_profile(profile)
        return (
            p.stream == stream
            and p.format in formats
            and (size is None or (p.width, p.height) == size)
            and (rate is None or p.fps == rate)
        )

    size = (width, height) if width is not None and height is not None else None
    if not recorded:
        size = size or (DEFAULT_WIDTH, DEFAULT_HEIGHT)
        fps = fps or DEFAULT_FPS
    colors = [(i, p) for i, p in profiles if matches(p, "color", COLOR_FORMATS, size, fps)]
    if not colors:
        wanted = f"{size[0]}x{size[1]}" if size else "any size"
        raise UnsupportedProfileError(
            f"camera {name} offers no colour stream at {wanted}@{fps or 'any'} fps; "
            f"colour profiles offered: {_offered(profiles, 'color', COLOR_FORMATS)}"
        )
    colors.sort(key=lambda item: COLOR_FORMATS.index(describe_profile(item[1]).format))
    color = colors[0]
    if not depth:
        return ProfileSelection(color, None)
    chosen = describe_profile(color[1])
    depth_size = size if size is not None else (chosen.width, chosen.height)
    depths = [(i, p) for i, p in profiles if matches(p, "depth", ("z16",), depth_size if not recorded else None, chosen.fps)]
    if not depths:
        raise UnsupportedProfileError(
            f"camera {name} offers no depth stream at {depth_size[0]}x{depth_size[1]}@{chosen.fps} fps "
            f"(depth must match the colour rate); depth profiles offered: {_offered(profiles, 'depth', ('z16',))}"
        )
    return ProfileSelection(color, depths[0])


def apply_exposure(rs: ModuleType, sensor: Any, name: str, exposure: float) -> None:
    if not sensor.supports(rs.option.exposure):
        raise UnsupportedProfileError(f"camera {name}: the colour sensor has no manual exposure")
    allowed = sensor.get_option_range(rs.option.exposure)
    if not allowed.min <= exposure <= allowed.max:
        raise UnsupportedProfileError(
            f"camera {name}: exposure {exposure:g} outside the supported range "
            f"{allowed.min:g}..{allowed.max:g} (step {allowed.step:g}, default {allowed.default:g})"
        )
    if sensor.supports(rs.option.enable_auto_exposure):
        sensor.set_option(rs.option.enable_auto_exposure, 0)
    sensor.set_option(rs.option.exposure, float(exposure))


@dataclass(frozen=True)
class RawFrame:
    host_time_s: float
    timestamp_ms: float
    frame: Any  # rs.frame, kept alive until paired and converted


def pop_pair(
    colors: Deque[RawFrame], depths: Optional[Deque[RawFrame]], tolerance_ms: float
) -> Optional[tuple[RawFrame, Optional[RawFrame]]]:
    """The oldest colour frame with its depth partner (timestamps within tolerance), dropping orphans.

    Both queues are in arrival order, so a head older than the other queue's head by more than the
    tolerance can never find a partner and is dropped.
    """
    if depths is None:
        return (colors.popleft(), None) if colors else None
    while colors and depths:
        gap = colors[0].timestamp_ms - depths[0].timestamp_ms
        if abs(gap) <= tolerance_ms:
            return colors.popleft(), depths.popleft()
        dropped = depths.popleft() if gap > 0 else colors.popleft()
        log.debug("dropped an unpaired frame at %.3f ms", dropped.timestamp_ms)
    return None


class Backoff:
    """Delays between reconnection attempts: initial, doubling, capped."""

    def __init__(self, initial_s: float, max_s: float, factor: float = 2.0) -> None:
        self.initial_s, self.max_s, self.factor = initial_s, max_s, factor
        self._next = initial_s

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


class _Composer:
    """Makes one frameset out of a colour and a depth frame, which is what rs.align consumes."""

    def __init__(self, rs: ModuleType) -> None:
        self._pending: list[Any] = []
        self._block = rs.processing_block(self._compose)
        self._out = rs.frame_queue(1)
        self._block.start(self._out)

    def _compose(self, _frame: Any, source: Any) -> None:
        source.frame_ready(source.allocate_composite_frame(self._pending))

    def __call__(self, color: Any, depth: Any) -> Any:
        self._pending = [depth, color]
        self._block.invoke(color)
        return self._out.wait_for_frame(1000).as_frameset()


@dataclass
class _Session:
    """One opening of the device: what must be stopped and released on close."""

    device: Any
    sensors: list[Any]
    playback: Optional[Any]
    recorder: Optional[Any]
    depth_scale: float
    bgr: bool
    tolerance_ms: float
    align: Optional[Any] = None
    composer: Optional[_Composer] = None
    closed: bool = False  # released: late SDK callbacks are ignored
    stopped: bool = False  # playback reached the end of the file
    paused: bool = False
    delivered: int = 0  # frames made from this opening
    colors: Deque[RawFrame] = field(default_factory=collections.deque)
    depths: Optional[Deque[RawFrame]] = None


DeviceFinder = Callable[[str], Any]


class RealSenseCamera(Camera):
    """A RealSense colour (+ aligned depth) camera, live or played back from a recording."""

    def __init__(
        self,
        config: RealSenseCameraConfig,
        *,
        clock: Clock = time.monotonic,
        sleep: Optional[Callable[[float], object]] = None,
        device_finder: Optional[DeviceFinder] = None,
    ) -> None:
        super().__init__(config.name, config.role, clock)
        self.config = config
        self._sleep = sleep  # None: wait on the stop event, so disconnect() interrupts a backoff
        self._finder = device_finder
        self._rs: Optional[ModuleType] = None
        self._context: Optional[Any] = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._session: Optional[_Session] = None
        self._connection = CameraConnection.DISCONNECTED
        self._latest: Optional[Frame] = None
        self._latest_seq = 0
        self._returned_seq = 0
        self._frames_received = 0
        self._attempts = 0
        self._last_error: Optional[str] = None
        self._last_activity = 0.0
        self._backoff = Backoff(config.reconnect_initial_s, config.reconnect_max_s)
        self._recordings = 0  # files started by record_to

    @property
    def step_mode(self) -> bool:
        return self.config.recording is not None and not self.config.real_time

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

    def _open_session(self) -> _Session:
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

    def _start_session(self, rs: ModuleType, device: Any, playback: Optional[Any]) -> _Session:
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
        session = _Session(
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
            session.composer = _Composer(rs)
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

    def _frame_callback(self, session: _Session) -> Callable[[Any], None]:
        # Runs on SDK threads: never block, never raise.
        live_limit = None if self.step_mode else LIVE_QUEUE

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
                if live_limit is not None and len(queue) > live_limit:
                    queue.popleft()
                self._cond.notify_all()

        return on_frame

    def _status_callback(self, session: _Session) -> Callable[[Any], None]:
        rs = self._rs
        assert rs is not None

        def on_status(status: Any) -> None:
            if status == rs.playback_status.stopped:
                with self._cond:
                    session.stopped = True
                    self._cond.notify_all()

        return on_status

    def _release(self, session: _Session, sensors: list[Any]) -> None:
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
            self._latest = None
            self._latest_seq = self._returned_seq = 0
            self._last_activity = self.clock()
            self._attempts = 0
            self._last_error = None
        self._backoff.reset()
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

    # ----- background thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self.step_mode:
                self._flow_control()
            else:
                self._capture()
        except Exception as exc:  # a dead thread must show up as a connection status, not as silence
            log.exception("camera %s: capture thread failed", self.name)
            self._set_connection(CameraConnection.FAILED, one_line(exc))

    def _capture(self) -> None:
        while not self._stop.is_set():
            session = self._session
            if session is None:
                self._reopen()
                continue
            with self._cond:
                pair = pop_pair(session.colors, session.depths, session.tolerance_ms)
                if pair is None and not session.stopped:
                    self._cond.wait(POLL_S)
                    pair = pop_pair(session.colors, session.depths, session.tolerance_ms)
            if pair is not None:
                try:
                    frame = self._convert(session, pair[0], pair[1], pair[0].host_time_s)
                except RuntimeError as exc:
                    self._lose_stream(f"SDK error while reading frames: {one_line(exc)}")
                    continue
                with self._cond:
                    self._latest = frame
                    self._latest_seq += 1
                    self._frames_received += 1
                    self._last_activity = self.clock()
                    session.delivered += 1
                    self._cond.notify_all()
            elif session.playback is not None:
                if session.stopped:
                    self._set_connection(CameraConnection.ENDED, "the recording has no more frames")
                    return
            else:
                silent = self.clock() - self._last_activity
                allowed = self.config.frame_timeout_s if session.delivered else max(self.config.frame_timeout_s, FIRST_FRAME_TIMEOUT_S)
                if silent > allowed:
                    self._lose_stream(f"no frame for {silent:.2f} s")

    def _lose_stream(self, reason: str) -> None:
        log.warning("camera %s: stream lost: %s", self.name, reason)
        if self.config.recording is not None:
            self._close_session()
            self._set_connection(CameraConnection.FAILED, reason)
            self._stop.set()
            return
        self._close_session()
        with self._cond:
            self._attempts = 0
        self._set_connection(CameraConnection.RECONNECTING, reason)

    def _reopen(self) -> None:
        delay = self._backoff.next_delay()
        if self._sleep is not None:
            self._sleep(delay)
        else:
            self._stop.wait(delay)
        if self._stop.is_set():
            return
        with self._cond:
            self._attempts += 1
            attempt = self._attempts
        try:
            session = self._open_session()
        except CameraError as exc:
            with self._cond:
                self._last_error = one_line(exc)
            log.info("camera %s: reconnection attempt %d failed: %s", self.name, attempt, one_line(exc))
            return
        with self._cond:
            self._session = session
            self._last_activity = self.clock()
            self._attempts = 0
        self._backoff.reset()
        self._set_connection(CameraConnection.STREAMING)

    def _flow_control(self) -> None:
        # Frame by frame: the file would otherwise be read into memory as fast as the disk allows.
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait(POLL_S)
                session = self._session
                if session is None or session.stopped:
                    return
                waiting = len(session.colors)
                action = None
                if waiting >= PLAYBACK_HIGH and not session.paused:
                    action, session.paused = "pause", True
                elif waiting <= PLAYBACK_LOW and session.paused:
                    action, session.paused = "resume", False
            if action is not None and session.playback is not None:
                log.debug("camera %s: %s playback (%d framesets unread)", self.name, action, waiting)
                getattr(session.playback, action)()

    # ----- frames ---------------------------------------------------------------------------------

    def _convert(self, session: _Session, color: RawFrame, depth: Optional[RawFrame], host_time_s: float) -> Frame:
        color_frame = color.frame
        depth_image = None
        if depth is not None:
            depth_frame = depth.frame
            if session.composer is not None and session.align is not None:
                aligned = session.align.process(session.composer(color_frame, depth_frame))
                depth_frame = aligned.get_depth_frame()
            depth_image = np.array(np.asanyarray(depth_frame.get_data()), dtype=np.uint16, copy=True)
        image = np.array(np.asanyarray(color_frame.get_data()), dtype=np.uint8, copy=True)
        if session.bgr:
            image = np.ascontiguousarray(image[..., ::-1])
        return Frame(
            image=image,
            depth=depth_image,
            depth_scale=session.depth_scale if depth is not None else 0.0,
            timestamp_ms=color.timestamp_ms,
            timestamp_domain=color_frame.get_frame_timestamp_domain().name,
            frame_number=int(color_frame.get_frame_number()),
            host_time_s=host_time_s,
            camera=self.name,
        )

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

    def read(self, timeout_s: float) -> Frame:
        if self.step_mode:
            return self._read_next_recorded(timeout_s)
        with self._cond:
            self._cond.wait_for(lambda: self._latest_seq > self._returned_seq or self._connection != CameraConnection.STREAMING, timeout_s)
            self._check_streaming()
            if self._latest_seq == self._returned_seq or self._latest is None:
                raise CameraTimeoutError(f"camera {self.name}: no new frame within {timeout_s * 1000:.0f} ms")
            self._returned_seq = self._latest_seq
            return self._latest

    def read_latest(self, max_age_s: float) -> Frame:
        if self.step_mode:
            # Frame by frame, "latest" is the next recorded frame: each control step consumes one.
            return self._read_next_recorded(self.config.frame_timeout_s)
        with self._cond:
            self._check_streaming()
            frame = self._latest
            if frame is None:
                raise StaleFrameError(f"camera {self.name}: no frame received yet")
            age = frame.age_s(self.clock())
            if age > max_age_s:
                raise StaleFrameError(
                    f"camera {self.name}: newest frame is {age * 1000:.0f} ms old (limit {max_age_s * 1000:.0f} ms)"
                )
            self._returned_seq = self._latest_seq
            return frame

    def _read_next_recorded(self, timeout_s: float) -> Frame:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._check_streaming()
                session = self._session
                assert session is not None
                pair = pop_pair(session.colors, session.depths, session.tolerance_ms)
                if pair is not None:
                    self._cond.notify_all()  # the flow-control thread may resume the file
                    break
                if session.stopped:
                    self._set_connection(CameraConnection.ENDED, f"the recording ended after {self._frames_received} frames")
                    raise CameraEndedError(f"camera {self.name}: the recording has no more frames")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraTimeoutError(f"camera {self.name}: no recorded frame within {timeout_s * 1000:.0f} ms")
                self._cond.wait(remaining)
            self._frames_received += 1
        return self._convert(session, pair[0], pair[1], self.clock())
