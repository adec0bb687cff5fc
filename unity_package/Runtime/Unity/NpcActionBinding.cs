using System;
using UnityEngine;

namespace NpcServer.Dialogue.Unity
{
    /// <summary>Which actions the NPC may or must call in the player's lines (the server enforces it).</summary>
    public enum NpcActionChoice
    {
        /// <summary>Talk, call an action, or both.</summary>
        Auto,
        /// <summary>Only talk.</summary>
        None,
        /// <summary>Call one of the actions.</summary>
        Required,
        /// <summary>Call the action named in the speaker's Action Choice Name.</summary>
        Named,
    }

    /// <summary>
    /// An action wired in the inspector: when the NPC calls it, <see cref="onCalled"/> fires on the main thread with
    /// the arguments as JSON, and an action that awaits its result sends <see cref="result"/> back.
    /// </summary>
    [Serializable]
    public sealed class NpcActionBinding
    {
        [Tooltip("The action's name: a letter or '_', then letters, digits or '_' (give_item).")]
        public string name = "";

        [Tooltip("Off: the persona declares this action on the server and this binding only handles it. On: the "
            + "speaker declares it with every line, with the description and schema below.")]
        public bool declare;

        [Tooltip("What the action does and when to use it, shown to the model (declared actions).")]
        public string description = "";

        [Tooltip("JSON schema of the arguments, an object schema; empty for none (declared actions). Enums keep a "
            + "small model from inventing values.")]
        [TextArea(2, 8)]
        public string parametersSchema = "";

        [Tooltip("The NPC waits for the result and then speaks about it (declared actions).")]
        public bool awaitResult;

        [Tooltip("The text sent back when the action awaits its result (\"the gate is open\").")]
        public string result = "";

        [Tooltip("Raised on the main thread when the NPC calls the action, with the arguments as JSON.")]
        public NpcTextEvent onCalled = new NpcTextEvent();
    }
}
