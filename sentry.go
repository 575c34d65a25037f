package veneur

import (
	"fmt"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/sirupsen/logrus"
)

// sentryFlushTimeout bounds how long reporting a crash, or stopping, waits
// for Sentry to take the events still queued.
const sentryFlushTimeout = 5 * time.Second

// newSentryHub returns a Sentry hub for dsn, or nil when dsn is empty. The
// release is veneur's VERSION and the server name the configured hostname.
func newSentryHub(dsn, hostname string) (*sentry.Hub, error) {
	if dsn == "" {
		return nil, nil
	}
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn:              dsn,
		Release:          VERSION,
		ServerName:       hostname,
		AttachStacktrace: true,
	})
	if err != nil {
		return nil, fmt.Errorf("sentry_dsn: %w", err)
	}
	return sentry.NewHub(client, sentry.NewScope()), nil
}

// sentryHook sends every log entry at error level or above to Sentry: the
// message, the entry's error as the exception, its other fields as tags.
type sentryHook struct {
	hub *sentry.Hub
}

func (h sentryHook) Levels() []logrus.Level {
	return []logrus.Level{logrus.ErrorLevel, logrus.FatalLevel, logrus.PanicLevel}
}

func (h sentryHook) Fire(e *logrus.Entry) error {
	ev := sentry.NewEvent()
	ev.Level = sentry.LevelError
	if e.Level < logrus.ErrorLevel {
		ev.Level = sentry.LevelFatal
	}
	ev.Message = e.Message
	ev.Logger = "veneur"
	ev.Timestamp = e.Time
	ev.Tags = map[string]string{}
	for k, v := range e.Data {
		if err, ok := v.(error); ok {
			ev.Exception = append(ev.Exception, sentry.Exception{Type: fmt.Sprintf("%T", err), Value: err.Error()})
			continue
		}
		ev.Tags[k] = fmt.Sprint(v)
	}
	h.hub.CaptureEvent(ev)
	return nil
}

// guard, deferred at the top of every goroutine the server's parts start,
// reports a panic to Sentry (when configured), waits for it to be sent and
// panics again, so that the process still crashes with the stack of the
// panic. It must be deferred itself, not called from a deferred function:
// recover only stops a panic when the deferred function calls it.
func (s *Server) guard() {
	if s.sentry == nil {
		return
	}
	if p := recover(); p != nil {
		s.sentry.Recover(p)
		s.sentry.Flush(sentryFlushTimeout)
		panic(p)
	}
}
