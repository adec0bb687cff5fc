using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using NpcServer.Api.V1;
using Action = System.Action; // the proto's Action message would make the delegate ambiguous

namespace NpcServer.Dialogue
{
    /// <summary>
    /// One NPC's conversation with the player: the state a dialogue UI needs (who, which conversation, whether a
    /// line is being spoken, the text so far) and one line at a time. Engine-free; the Unity NpcSpeaker component
    /// wraps it. Events fire on the transport's thread; marshal them (see <see cref="MainThreadQueue"/>) before
    /// touching engine objects.
    /// </summary>
    public sealed class NpcConversation
    {
        /// <summary>
        /// Most follow-up lines one exchange sends results for on its own (a model that keeps calling actions stops
        /// there; the last line then has <see cref="NpcLine.AwaitsResults"/>).
        /// </summary>
        public const int MaxFollowUps = 4;

        readonly NpcClient _client;
        readonly object _gate = new object();
        readonly Dictionary<string, Registration> _actions = new Dictionary<string, Registration>();
        CancellationTokenSource _current;
        string _partialText = "";

        /// <summary>Creates the conversation state for one persona and one game-chosen conversation id.</summary>
        public NpcConversation(NpcClient client, string personaId, string conversationId)
        {
            if (client == null) throw new ArgumentNullException("client");
            _client = client;
            PersonaId = personaId;
            ConversationId = conversationId;
            PlayerName = "";
            GameState = new List<string>();
        }

        /// <summary>
        /// Facts from the game sent with each line ("it is night", "the player carries the silver key"): the NPC knows
        /// them for that line only; they are never stored as dialogue. Change it before <see cref="SayAsync"/>.
        /// </summary>
        public List<string> GameState { get; private set; }

        /// <summary>
        /// A line passed its checks (not empty, not while another is spoken) and is being sent. Raised on the thread
        /// that called <see cref="SayAsync"/>, before any delta; a refused line raises nothing.
        /// </summary>
        public event Action LineStarted;

        /// <summary>A delta of the line being spoken arrived.</summary>
        public event Action<string> DeltaReceived;

        /// <summary>The line finished.</summary>
        public event Action<NpcLine> LineFinished;

        /// <summary>The line failed (an <see cref="NpcRpcException"/>, or OperationCanceledException when cancelled).</summary>
        public event Action<Exception> LineFailed;

        /// <summary>
        /// The NPC called an action, in the reply's order (between its deltas), before the action's handler runs.
        /// </summary>
        public event Action<NpcActionCall> ActionCalled;

        /// <summary>The results of awaited actions are being sent (call id to content), before the follow-up line.</summary>
        public event Action<IDictionary<string, string>> ActionResultsSent;

        /// <summary>
        /// Which actions the NPC may or must call in the player's lines (null: auto). The server enforces it. A
        /// follow-up line after results leaves the choice to the server (or sends none when this is none), so the
        /// NPC can speak about them.
        /// </summary>
        public ActionChoice ActionChoice { get; set; }

        /// <summary>The persona id of the NPC ("tavern_keeper").</summary>
        public string PersonaId { get; set; }

        /// <summary>The game's id for this conversation (a player id, a save slot).</summary>
        public string ConversationId { get; set; }

        /// <summary>The player's name for the lines they say; empty means the persona's default.</summary>
        public string PlayerName { get; set; }

        /// <summary>Optional sampling preset for each line; empty means the persona's default.</summary>
        public string Preset { get; set; }

        /// <summary>Optional cap on reply tokens; 0 means the persona's or server's default.</summary>
        public int MaxTokens { get; set; }

        /// <summary>True while a line is being spoken.</summary>
        public bool IsTalking
        {
            get
            {
                lock (_gate) return _current != null;
            }
        }

        /// <summary>The text of the line being spoken so far (empty when idle).</summary>
        public string PartialText
        {
            get
            {
                lock (_gate) return _partialText;
            }
        }

        /// <summary>The last line the NPC finished, or null.</summary>
        public NpcLine LastLine { get; private set; }

        /// <summary>
        /// Declares an action the NPC can take in every line, added to the persona's own (replacing one registered
        /// under the same name). <paramref name="handler"/> (optional) runs when the NPC calls it, on the
        /// transport's thread; for an action with AwaitResult, the text its task returns goes back to the NPC,
        /// who then speaks about it. Throws <see cref="ArgumentException"/> for a name the server would refuse.
        /// </summary>
        public void RegisterAction(NpcServer.Api.V1.Action action, Func<NpcActionCall, Task<string>> handler = null)
        {
            if (action == null) throw new ArgumentNullException("action");
            NpcActionCall.CheckName(action.Name);
            lock (_gate) _actions[action.Name] = new Registration(action, handler);
        }

        /// <summary>
        /// Runs <paramref name="handler"/> when the NPC calls <paramref name="name"/>, an action its persona declares
        /// on the server (like the tavern keeper's give_item). Same contract as <see cref="RegisterAction"/>.
        /// </summary>
        public void HandleAction(string name, Func<NpcActionCall, Task<string>> handler)
        {
            NpcActionCall.CheckName(name);
            if (handler == null) throw new ArgumentNullException("handler");
            lock (_gate) _actions[name] = new Registration(null, handler);
        }

        /// <summary>Forgets a registered action or handler; returns whether there was one.</summary>
        public bool UnregisterAction(string name)
        {
            lock (_gate) return _actions.Remove(name ?? "");
        }

        /// <summary>
        /// The player says <paramref name="text"/>; returns the NPC's finished line. One line at a time: throws
        /// <see cref="InvalidOperationException"/> while a line is being spoken (call <see cref="Cancel"/> first).
        /// When the line awaits actions that all have handlers, their results go back and the NPC's follow-up line
        /// is awaited too (<see cref="NpcLine.FollowUp"/>); each part raises LineStarted and LineFinished.
        /// </summary>
        public async Task<NpcLine> SayAsync(string text, CancellationToken cancellationToken = default(CancellationToken))
        {
            if (string.IsNullOrEmpty(text) || text.Trim().Length == 0)
            {
                throw new ArgumentException("the player's line must not be empty", "text");
            }
            var source = Begin(cancellationToken);
            var request = BuildRequest(false);
            request.Text = text;
            try
            {
                var line = await SpeakAsync(request, null, source.Token).ConfigureAwait(false);
                var part = line;
                for (var i = 0; i < MaxFollowUps && part.AwaitsResults; i++)
                {
                    var results = await RunAwaitedAsync(part).ConfigureAwait(false);
                    if (results == null) break; // an awaited action has no handler: the game sends the result
                    part.FollowUp = await SpeakAsync(BuildRequest(true), results, source.Token).ConfigureAwait(false);
                    part = part.FollowUp;
                }
                Finish(source);
                return line;
            }
            catch (Exception e)
            {
                Finish(source);
                var failed = LineFailed;
                if (failed != null) failed(e);
                throw;
            }
        }

        /// <summary>
        /// Sends the results of the calls a line awaited (<see cref="NpcLine.AwaitsResults"/>): call id to content,
        /// with no player text. Returns the NPC's follow-up line, in which it speaks about them.
        /// </summary>
        public async Task<NpcLine> SendActionResultsAsync(IDictionary<string, string> results,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            if (results == null || results.Count == 0)
            {
                throw new ArgumentException("send at least one call id and its result", "results");
            }
            var source = Begin(cancellationToken);
            try
            {
                var line = await SpeakAsync(BuildRequest(true), results, source.Token).ConfigureAwait(false);
                Finish(source);
                return line;
            }
            catch (Exception e)
            {
                Finish(source);
                var failed = LineFailed;
                if (failed != null) failed(e);
                throw;
            }
        }

        CancellationTokenSource Begin(CancellationToken cancellationToken)
        {
            CancellationTokenSource source;
            lock (_gate)
            {
                if (_current != null)
                {
                    throw new InvalidOperationException(
                        "NPC '" + PersonaId + "' is still speaking; call Cancel() before saying another line");
                }
                source = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                _current = source;
                _partialText = "";
            }
            return source;
        }

        TalkRequest BuildRequest(bool followUp)
        {
            var request = new TalkRequest
            {
                PersonaId = PersonaId,
                ConversationId = ConversationId,
                PlayerName = PlayerName ?? "",
            };
            request.GameState.AddRange(GameState);
            if (!string.IsNullOrEmpty(Preset)) request.Preset = Preset;
            if (MaxTokens > 0) request.MaxTokens = MaxTokens;
            lock (_gate)
            {
                foreach (var registration in _actions.Values)
                {
                    if (registration.Declared != null) request.Actions.Add(registration.Declared);
                }
            }
            var choice = ActionChoice;
            // Required and named choices are for the player's line: on a follow-up they would force a call after
            // every result, and the NPC could never speak about it. Unset there is the server's default.
            if (choice != null && (!followUp || choice.Mode == ActionChoice.Types.Mode.None))
            {
                request.ActionChoice = choice;
            }
            return request;
        }

        // One Talk: raises LineStarted, streams deltas and action calls (starting their handlers), raises
        // LineFinished.
        async Task<NpcLine> SpeakAsync(TalkRequest request, IDictionary<string, string> results,
            CancellationToken token)
        {
            if (results != null)
            {
                foreach (var pair in results)
                {
                    request.ActionResults.Add(new ActionResult { CallId = pair.Key, Content = pair.Value ?? "" });
                }
                var sent = ActionResultsSent;
                if (sent != null) sent(results);
            }
            lock (_gate) _partialText = "";
            var started = LineStarted;
            if (started != null) started();
            var calls = new CallSink(this);
            var line = await _client.TalkAsync(request, new DeltaSink(this), calls, token).ConfigureAwait(false);
            line.ActionResults = results ?? new Dictionary<string, string>();
            line.Handlers = calls.Running;
            lock (_gate) LastLine = line;
            var finished = LineFinished;
            if (finished != null) finished(line);
            return line;
        }

        // The results of a line's awaited calls, from their handlers; null when one has no handler.
        async Task<IDictionary<string, string>> RunAwaitedAsync(NpcLine line)
        {
            var results = new Dictionary<string, string>();
            foreach (var call in line.ActionCalls)
            {
                Registration registration;
                lock (_gate) _actions.TryGetValue(call.Name, out registration);
                if (registration != null && registration.Declared != null && !registration.Declared.AwaitResult)
                {
                    continue; // fire-and-forget: nothing goes back
                }
                Task<string> running;
                if (line.Handlers == null || !line.Handlers.TryGetValue(call.Id, out running)) return null;
                results[call.Id] = await running.ConfigureAwait(false) ?? "done";
            }
            return results.Count > 0 ? results : null;
        }

        void OnActionCall(NpcActionCall call, Dictionary<string, Task<string>> running)
        {
            var called = ActionCalled;
            if (called != null) called(call);
            Registration registration;
            lock (_gate) _actions.TryGetValue(call.Name, out registration);
            if (registration == null || registration.Handler == null) return;
            Task<string> task;
            try
            {
                task = registration.Handler(call) ?? Task.FromResult<string>(null);
            }
            catch (Exception e)
            {
                var failed = new TaskCompletionSource<string>();
                failed.SetException(e);
                task = failed.Task;
            }
            // A fire-and-forget handler's failure is the handler's own business; observe it so it is not rethrown
            // by the finalizer.
            task.ContinueWith(t => t.Exception, TaskContinuationOptions.OnlyOnFaulted);
            running[call.Id] = task;
        }

        /// <summary>Stops the line being spoken, if any. The server stores no turn for it.</summary>
        public void Cancel()
        {
            lock (_gate)
            {
                if (_current != null) _current.Cancel();
            }
        }

        /// <summary>Exports this conversation as a save-file string (see <see cref="ConversationSave"/>).</summary>
        public async Task<string> ExportAsync(CancellationToken cancellationToken = default(CancellationToken))
        {
            var conversation = await _client.ExportConversationAsync(PersonaId, ConversationId, cancellationToken)
                .ConfigureAwait(false);
            return ConversationSave.ToSaveString(conversation);
        }

        /// <summary>
        /// Restores this conversation from a save-file string, replacing what the server held. The saved turns go
        /// to this object's persona and conversation id, so a save can also be loaded into another slot. Returns
        /// how many turns were restored.
        /// </summary>
        public Task<int> ImportAsync(string saved, CancellationToken cancellationToken = default(CancellationToken))
        {
            var conversation = ConversationSave.FromSaveString(saved);
            conversation.PersonaId = PersonaId;
            conversation.ConversationId = ConversationId;
            return _client.ImportConversationAsync(conversation, cancellationToken);
        }

        /// <summary>Forgets every turn of this conversation; returns how many were forgotten.</summary>
        public Task<int> ResetAsync(CancellationToken cancellationToken = default(CancellationToken))
        {
            return _client.ResetConversationAsync(PersonaId, ConversationId, cancellationToken);
        }

        void Finish(CancellationTokenSource source)
        {
            lock (_gate)
            {
                if (_current == source)
                {
                    _current = null;
                    _partialText = "";
                }
            }
            source.Dispose();
        }

        void OnDelta(string delta)
        {
            lock (_gate) _partialText += delta;
            var received = DeltaReceived;
            if (received != null) received(delta);
        }

        sealed class Registration
        {
            public readonly NpcServer.Api.V1.Action Declared;
            public readonly Func<NpcActionCall, Task<string>> Handler;

            public Registration(NpcServer.Api.V1.Action declared, Func<NpcActionCall, Task<string>> handler)
            {
                Declared = declared;
                Handler = handler;
            }
        }

        sealed class CallSink : IProgress<NpcActionCall>
        {
            readonly NpcConversation _owner;
            public readonly Dictionary<string, Task<string>> Running = new Dictionary<string, Task<string>>();

            public CallSink(NpcConversation owner)
            {
                _owner = owner;
            }

            public void Report(NpcActionCall value)
            {
                _owner.OnActionCall(value, Running);
            }
        }

        // Calls back synchronously, in order (Progress<T> would post to a thread pool and could reorder deltas).
        sealed class DeltaSink : IProgress<string>
        {
            readonly NpcConversation _owner;

            public DeltaSink(NpcConversation owner)
            {
                _owner = owner;
            }

            public void Report(string value)
            {
                _owner.OnDelta(value);
            }
        }
    }
}
