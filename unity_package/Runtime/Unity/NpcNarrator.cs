using UnityEngine;
using UnityEngine.UI;

namespace NpcServer.Dialogue.Unity
{
    /// <summary>
    /// Types an NPC's streamed reply into a UI Text at a steady speed. Point <c>speaker</c> at an
    /// <see cref="NpcSpeaker"/> (or bind the speaker's onDelta to <see cref="Append"/>). For TextMeshPro, leave
    /// <c>target</c> empty and bind onTextChanged to the TMP_Text's text property.
    /// </summary>
    [AddComponentMenu("NPC Dialogue/NPC Narrator")]
    public sealed class NpcNarrator : MonoBehaviour
    {
        [Tooltip("The speaker whose replies to type. Optional: you can call Append yourself.")]
        [SerializeField]
        NpcSpeaker speaker;

        [Tooltip("A UI Text to type into. Optional: onTextChanged works with any text component.")]
        [SerializeField]
        Text target;

        [Tooltip("Characters revealed per second. 0 shows text as soon as it arrives.")]
        [Min(0)]
        [SerializeField]
        float charactersPerSecond = 40f;

        [Tooltip("Raised with the visible text whenever it changes (bind TMP_Text.text here).")]
        public NpcTextEvent onTextChanged = new NpcTextEvent();

        readonly TypewriterBuffer _buffer = new TypewriterBuffer();

        /// <summary>The speaker whose replies are typed.</summary>
        public NpcSpeaker Speaker
        {
            get { return speaker; }
            set
            {
                Unhook();
                speaker = value;
                if (isActiveAndEnabled) Hook();
            }
        }

        /// <summary>The text revealed so far.</summary>
        public string VisibleText
        {
            get { return _buffer.Visible; }
        }

        /// <summary>True when everything received is visible.</summary>
        public bool IsCaughtUp
        {
            get { return _buffer.IsCaughtUp; }
        }

        /// <summary>Adds streamed text to type out.</summary>
        public void Append(string delta)
        {
            _buffer.Append(delta);
        }

        /// <summary>Empties the text for a new line.</summary>
        public void Clear()
        {
            _buffer.Clear();
            Show();
        }

        /// <summary>Shows everything received at once (the player clicked to skip).</summary>
        public void RevealAll()
        {
            _buffer.RevealAll();
            Show();
        }

        void OnEnable()
        {
            Hook();
        }

        void OnDisable()
        {
            Unhook();
        }

        void Update()
        {
            _buffer.CharactersPerSecond = charactersPerSecond;
            if (_buffer.Advance(Time.unscaledDeltaTime)) Show();
        }

        void Hook()
        {
            if (speaker == null) return;
            speaker.LineStarted += Clear;
            speaker.DeltaReceived += Append;
        }

        void Unhook()
        {
            if (speaker == null) return;
            speaker.LineStarted -= Clear;
            speaker.DeltaReceived -= Append;
        }

        void Show()
        {
            string visible = _buffer.Visible;
            if (target != null) target.text = visible;
            onTextChanged.Invoke(visible);
        }
    }
}
